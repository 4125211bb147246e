"""A sweep's summary: results.csv, results.md and plots from its members' folders."""

import json
import pathlib

import numpy as np

from vaejax import config as config_lib
from vaejax import files
from vaejax import plots
from vaejax import tables
from vaejax.sweep import members as members_lib

CSV_COLUMNS = ('latent_dim', 'seed', 'test_elbo', 'test_log_likelihood',
               'test_kl', 'test_nll_iwae', 'active_units', 'iwae_samples',
               'epochs', 'train_seconds')
# Added for members of two stochastic layers: z_2's size, and lists bottom
# up, ';'-joined.
LAYER_COLUMNS = ('top_latent_dim', 'active_units_per_layer', 'test_kl_per_layer')


def summarize(workdir, log=print):
  """Merges the members' results into results.csv, results.md and plots.

  Returns:
    One dict per finished member, in the sweep's order.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / members_lib.SWEEP_FILE
  if not path.exists():
    raise config_lib.ConfigError(
        f'{workdir} holds no sweep ({members_lib.SWEEP_FILE} is missing)')
  saved = json.loads(path.read_text())
  tops = saved.get('top_latent_dims') or [0]
  members = [members_lib.Member(k, s, t) for k in saved['latent_dims']
             for t in tops for s in saved['seeds']]
  size_key = 'top_latent_dim' if saved.get('top_latent_dims') else 'latent_dim'
  size_name = 'z_2' if saved.get('top_latent_dims') else 'z'

  rows, curves, missing = [], {}, []
  for member in members:
    member_dir = workdir / member.name
    if not (member_dir / 'results.json').exists():
      missing.append(member.name)
      continue
    results = files.read_json(member_dir / 'results.json')
    rows.append({'seed': member.seed, **{k: results.get(k)
                                         for k in CSV_COLUMNS + LAYER_COLUMNS
                                         if k != 'seed'}})
    curves[member] = files.read_jsonl(member_dir / 'metrics.jsonl')
  if missing:
    log(f'not finished yet: {", ".join(missing)}')
  _write_csv(workdir / 'results.csv', rows)
  table = results_markdown(rows, size_key)
  files.write_atomic(workdir / 'results.md', table)
  if rows:
    plots.plot_bound_curves(workdir / 'bound_vs_examples.png', curves,
                            size_name)
    plots.plot_by_latent_dim(
        workdir / 'nll_and_active_units.png',
        [{**r, 'active_units': _active_units(r, size_key)} for r in rows],
        size_key)
    plots.plot_samples_by_latent_dim(
        workdir / 'samples_by_latent_dim.png',
        {m: workdir / m.name / 'samples.png' for m in curves}, size_name)
  log(table)
  return rows


def _layered(rows):
  return any(r.get('active_units_per_layer') for r in rows)


def _csv_cell(value):
  if value is None:
    return ''
  if isinstance(value, list):
    return ';'.join(map(_csv_cell, value))
  return repr(value) if isinstance(value, float) else str(value)


def _write_csv(path, rows):
  columns = CSV_COLUMNS + (LAYER_COLUMNS if _layered(rows) else ())
  lines = [','.join(columns)]
  for row in rows:
    lines.append(','.join(_csv_cell(row.get(c)) for c in columns))
  files.write_atomic(path, '\n'.join(lines) + '\n')


def _active_units(row, size_key):
  """The active units of the layer whose size `size_key` is."""
  if size_key == 'top_latent_dim':
    return row['active_units_per_layer'][1]
  return row['active_units']


def results_markdown(rows, size_key='latent_dim'):
  """The members table, and mean +- std over seeds per swept size.

  Args:
    rows: one dict per member, the keys of `CSV_COLUMNS` (and of
      `LAYER_COLUMNS` for two-layer members).
    size_key: the size the sweep varies: 'latent_dim', or 'top_latent_dim'.
  """
  layered = _layered(rows)
  by_layer = lambda values, fmt: ' / '.join(map(fmt, values))
  members = tables.markdown_table(
      ['latent_dim'] + (['top_latent_dim'] if layered else []) + [
          'seed', 'test ELBO', 'test log-likelihood',
          'test KL (z / z_2)' if layered else 'test KL', 'test NLL (IWAE)',
          'active units (z / z_2)' if layered else 'active units'],
      [[r['latent_dim']] + ([r['top_latent_dim']] if layered else []) + [
          r['seed'], f'{r["test_elbo"]:.2f}', f'{r["test_log_likelihood"]:.2f}',
          (by_layer(r['test_kl_per_layer'], '{:.2f}'.format) if layered
           else f'{r["test_kl"]:.2f}'),
          f'{r["test_nll_iwae"]:.2f}',
          (by_layer(r['active_units_per_layer'], str) if layered
           else r['active_units'])] for r in rows],
      align='r' * (8 if layered else 7))
  groups = []
  for size in sorted({r[size_key] for r in rows}):
    group = [r for r in rows if r[size_key] == size]
    active = (by_layer(zip(*(r['active_units_per_layer'] for r in group)),
                       _mean_std) if layered
              else _mean_std([r['active_units'] for r in group]))
    groups.append([size, len(group)] + [
        _mean_std([r[k] for r in group]) for k in ('test_elbo', 'test_nll_iwae')
    ] + [active])
  by_size = tables.markdown_table(
      [size_key, 'seeds', 'test ELBO', 'test NLL (IWAE)',
       'active units (z / z_2)' if layered else 'active units'],
      groups, align='r' * 5)
  text = members + '\n\n' + by_size + '\n'
  if rows:
    text += (f'\nNLL by the importance-weighted bound with K = '
             f'{rows[0]["iwae_samples"]}; mean +- standard deviation over seeds.\n')
  return text


def _mean_std(values):
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f'{values.mean():.2f}'
  return f'{values.mean():.2f} +- {values.std(ddof=1):.2f}'
