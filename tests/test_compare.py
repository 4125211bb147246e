"""vaejax.compare and experiments.compare: finished runs side by side."""

import pathlib
import subprocess
import sys

import pytest

from vaejax import compare
from vaejax import config as config_lib
from vaejax import train

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
    assert float(cells[3]) == pytest.approx(
        results['train_seconds'] / results['epochs'], abs=0.006)
    assert float(cells[4]) == pytest.approx(results['test_elbo'], abs=0.006)
    assert float(cells[5].split()[0]) == pytest.approx(
        results['test_nll_iwae'], abs=0.006)
  assert (tmp_path / 'results.md').read_text() == table
  assert (tmp_path / 'learning_curves.png').stat().st_size > 0


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
