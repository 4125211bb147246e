"""Finished runs side by side: a markdown table and their learning curves.

`python -m experiments.compare --workdirs=A,B,... --output_dir=DIR` writes
DIR/results.md and DIR/learning_curves.png from the runs' metrics.jsonl
and results.json; docs/results.md is made with it.
"""

import pathlib

from vaejax import config as config_lib
from vaejax import files
from vaejax import plots
from vaejax import reevaluate
from vaejax import tables


def compare(workdirs, output_dir, log=print):
  """Writes results.md and learning_curves.png of finished runs to `output_dir`.

  Args:
    workdirs: the runs' workdirs, in table order; each is named by its
      folder's name.
    output_dir: where the table and the plot go (created).
    log: prints the table.

  Returns:
    The table as markdown.

  Raises:
    config.ConfigError: a workdir that holds no finished run, or two
      workdirs of the same name.
  """
  rows, curves = [], {}
  for workdir in map(pathlib.Path, workdirs):
    name = workdir.name
    if name in curves:
      raise config_lib.ConfigError(f'two workdirs are named {name}: the table '
                                   'names runs by their folders')
    try:
      results = files.read_json(workdir / 'results.json')
      curves[name] = files.read_jsonl(workdir / 'metrics.jsonl')
    except (OSError, ValueError) as e:
      raise config_lib.ConfigError(
          f'{workdir} holds no finished run ({e.__class__.__name__}: '
          f'{" ".join(str(e).split())})') from None
    if not curves[name]:
      raise config_lib.ConfigError(f'{workdir} holds no finished run '
                                   '(metrics.jsonl is missing or empty)')
    rows.append([
        name, results['epochs'], results.get('final_epoch', results['epochs']),
        f'{results["train_seconds"] / 3600:.2f}',
        f'{results["train_seconds"] / results["epochs"]:.2f}',
        f'{results["test_elbo"]:.2f}',
        f'{results["test_nll_iwae"]:.2f} +- {results["test_nll_iwae_stderr"]:.2f} '
        f'(K={results["iwae_samples"]})',
        _reestimates(workdir),
        _active_units(results, 'active_units'),
        _active_units(results, 'active_units_train500')])
  table = tables.markdown_table(
      ['run', 'epochs', 'final epoch', 'training hours', 'seconds per epoch',
       'test ELBO', 'test NLL', 'test NLL re-estimated', 'active units',
       'active units, first 500 training images'], rows) + '\n'
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  files.write_atomic(output_dir / 'results.md', table)
  plots.plot_learning_curves(output_dir / 'learning_curves.png', curves)
  log(table)
  return table


def _active_units(results, key):
  """'count / size' of each stochastic layer, or '-' for a run without `key`."""
  if key not in results:
    return '-'
  sizes = [results['latent_dim']]
  if results.get('top_latent_dim'):
    sizes.append(results['top_latent_dim'])
  counts = results.get(f'{key}_per_layer') or [results[key]]
  return ', '.join(f'{c} / {s}' for c, s in zip(counts, sizes))


def _reestimates(workdir):
  """The run's experiments.evaluate figures (evaluations.jsonl), or '-'."""
  path = workdir / reevaluate.EVALUATIONS_FILE
  if not path.exists():
    return '-'
  return '; '.join(
      f'{r["test_nll_iwae"]:.2f} +- {r["test_nll_iwae_stderr"]:.2f} '
      f'(K={r["iwae_samples"]} x {r["repeats"]}, epoch {_epoch_of(r)})'
      for r in files.read_jsonl(path)) or '-'


def _epoch_of(record):
  """Whose parameters an evaluations.jsonl record estimated; records written
  before `--params` existed name it `final_epoch`."""
  return record.get('epoch', record.get('final_epoch', '?'))
