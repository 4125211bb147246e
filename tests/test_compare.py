"""vaejax.compare and experiments.compare: finished runs side by side."""

import json
import pathlib
import subprocess
import sys

import pytest

from vaejax import compare
from vaejax import config as config_lib
from vaejax import files
from vaejax import plots
from vaejax import reevaluate
from vaejax import train
import pngs  # pylint: disable=g-bad-import-order

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def small_config(workdir, **overrides):
  return config_lib.TrainConfig(
      workdir=str(workdir), dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(32,), latent_dim=4, batch_size=100, eval_iwae_samples=20,
      progress=False, **overrides)


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  configs = [small_config(root / 'elbo', num_epochs=2),
             small_config(root / 'iwae', num_epochs=1, objective='iwae',
                          num_samples=3)]
  return [(c.workdir, train.train_and_evaluate(c)) for c in configs]


def test_table_holds_each_runs_results_and_the_plot_is_written(two_runs,
                                                                tmp_path):
  table = compare.compare([w for w, _ in two_runs], tmp_path, log=lambda _: None)
  lines = table.splitlines()
  assert len(lines) == 2 + len(two_runs)
  for line, (_, results), name in zip(lines[2:], two_runs,
                                      ('elbo', 'iwae')):
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[0] == name
    assert int(cells[1]) == results['epochs']
    assert float(cells[4]) == pytest.approx(
        results['train_seconds'] / results['epochs'], abs=0.006)
    assert float(cells[5]) == pytest.approx(results['test_elbo'], abs=0.006)
    assert float(cells[6].split()[0]) == pytest.approx(
        results['test_nll_iwae'], abs=0.006)
    assert int(cells[2]) == results['final_epoch']
    assert cells[7] == '-'  # no re-estimates
    assert cells[8] == f'{results["active_units"]} / 4'
    assert cells[9] == f'{results["active_units_train500"]} / 4'
  assert (tmp_path / 'results.md').read_text() == table
  # Each run's curves in its colour.
  pngs.assert_figure(tmp_path / 'learning_curves.png', (7.0, 4.0),
                     plots._colors(2))  # pylint: disable=protected-access


def test_two_layers_active_units_and_re_estimates_have_their_cells(two_runs,
                                                                   tmp_path):
  # A copy of a finished run, as a two-layer run's results.json and an
  # experiments.evaluate record would make it.
  run = tmp_path / 'two_layer'
  run.mkdir()
  source = pathlib.Path(two_runs[0][0])
  (run / 'metrics.jsonl').write_bytes((source / 'metrics.jsonl').read_bytes())
  results = dict(two_runs[0][1], latent_dim=4, top_latent_dim=2,
                 active_units_per_layer=[3, 1], active_units=3,
                 active_units_train500_per_layer=[4, 0], active_units_train500=4)
  files.write_atomic(run / 'results.json', json.dumps(results))
  files.append_jsonl(run / reevaluate.EVALUATIONS_FILE, dict(
      iwae_samples=200, repeats=5, params='final', epoch=2,
      test_nll_iwae=90.123, test_nll_iwae_stderr=0.25))
  files.append_jsonl(run / reevaluate.EVALUATIONS_FILE, dict(  # an older record
      iwae_samples=5000, repeats=1, final_epoch=2, test_nll_iwae=89.5,
      test_nll_iwae_stderr=0.24))
  table = compare.compare([run], tmp_path / 'out', log=lambda _: None)
  cells = [c.strip() for c in table.splitlines()[2].strip('|').split('|')]
  assert cells[7:] == ['90.12 +- 0.25 (K=200 x 5, epoch 2); '
                       '89.50 +- 0.24 (K=5000 x 1, epoch 2)', '3 / 4, 1 / 2',
                       '4 / 4, 0 / 2']


def test_an_unfinished_run_is_refused_in_one_line(two_runs, tmp_path):
  with pytest.raises(config_lib.ConfigError, match='holds no finished run'):
    compare.compare([two_runs[0][0], str(tmp_path / 'none')], tmp_path / 'out')
  with pytest.raises(config_lib.ConfigError, match='two workdirs are named elbo'):
    compare.compare([two_runs[0][0], two_runs[0][0]], tmp_path / 'out')
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.compare',
       f'--workdirs={tmp_path / "none"}', f'--output_dir={tmp_path / "out"}'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f'error: {tmp_path / "none"} holds no finished run (FileNotFoundError'), lines
  assert not (tmp_path / 'out').exists()
