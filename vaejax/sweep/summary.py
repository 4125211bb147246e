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
# Added for members of two stochastic layers: lists, bottom up, ';'-joined.
LAYER_COLUMNS = ('active_units_per_layer', 'test_kl_per_layer')


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
  members = [members_lib.Member(k, s)
             for k in saved['latent_dims'] for s in saved['seeds']]
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
  table = results_markdown(rows)
  files.write_atomic(workdir / 'results.md', table)
  if rows:
    plots.plot_bound_curves(workdir / 'bound_vs_examples.png', curves)
    plots.plot_by_latent_dim(workdir / 'nll_and_active_units.png', rows)
    plots.plot_samples_by_latent_dim(
        workdir / 'samples_by_latent_dim.png',
        {m: workdir / m.name / 'samples.png' for m in curves})
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


def _active(row):
  """'a', or 'a1 / a2' by layer for two stochastic layers."""
  per_layer = row.get('active_units_per_layer')
  return ' / '.join(map(str, per_layer)) if per_layer else row['active_units']


def results_markdown(rows):
  """The members table, and mean +- std over seeds per latent size."""
  layered = _layered(rows)
  members = tables.markdown_table(
      ['latent_dim', 'seed', 'test ELBO', 'test log-likelihood',
       'test KL (z / z_2)' if layered else 'test KL', 'test NLL (IWAE)',
       'active units (z / z_2)' if layered else 'active units'],
      [[r['latent_dim'], r['seed'], f'{r["test_elbo"]:.2f}',
        f'{r["test_log_likelihood"]:.2f}',
        (' / '.join(f'{v:.2f}' for v in r['test_kl_per_layer'])
         if layered else f'{r["test_kl"]:.2f}'),
        f'{r["test_nll_iwae"]:.2f}', _active(r)] for r in rows],
      align='r' * 7)
  groups = []
  for latent_dim in sorted({r['latent_dim'] for r in rows}):
    group = [r for r in rows if r['latent_dim'] == latent_dim]
    groups.append([latent_dim, len(group)] + [
        _mean_std([r[k] for r in group])
        for k in ('test_elbo', 'test_nll_iwae', 'active_units')])
  by_size = tables.markdown_table(
      ['latent_dim', 'seeds', 'test ELBO', 'test NLL (IWAE)', 'active units'],
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
