"""Kill the binaries with SIGKILL at random moments; the rerun loses nothing.

A vectorised sweep (small configs on the generated dataset; its members'
folders are the train binary's) is killed twice in a row, at random moments after each
has made some progress: inside an epoch, in the per-epoch evaluation, while
a checkpoint is being written, in the final evaluation. The same command is
run again after every kill. The files at the end must equal, number for
number, those of an uninterrupted run of the same command in another process
(which also shows that two processes with the same flags and seed agree),
with every epoch's metrics line once. A sweep never retrains a finished
member. Each rerun also shows that the killed run left no stale workdir
lock: a held lock would refuse it.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vaejax import files

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMING_FIELDS = ('epoch_seconds', 'examples_per_second', 'compile_seconds',
                 'train_seconds')
NUM_EPOCHS = 4
FLAGS = ['--dataset=linear_gaussian', '--likelihood=gaussian',
         '--hidden_dims=64', '--batch_size=50', f'--num_epochs={NUM_EPOCHS}',
         '--eval_iwae_samples=50', '--checkpoints_to_keep=2']
SWEEP = ['experiments.sweep', *FLAGS, '--latent_dims=1,3', '--seeds=0',
         '--vectorize']


def command(args, workdir):
  return [sys.executable, '-m', *args, f'--workdir={workdir}']


def run(args, workdir):
  result = subprocess.run(command(args, workdir), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]


def metrics_lines(run_dirs):
  total = 0
  for run_dir in run_dirs:
    path = run_dir / 'metrics.jsonl'
    if path.exists():
      total += path.read_text().count('\n')
  return total


def kill_at_random_moments(args, workdir, run_dirs, rng, kills):
  """Starts the command again and again, up to `kills` times, until it ends.

  Each start is killed by SIGKILL once it has written one more metrics line
  than the run had (or has ended), after a further random delay. Returns the
  files of the runs seen finished (folder -> file name -> bytes) and the
  number of kills.
  """
  finished, killed = {}, 0
  while killed < kills:
    lines = metrics_lines(run_dirs(workdir))
    process = subprocess.Popen(command(args, workdir), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while process.poll() is None and metrics_lines(run_dirs(workdir)) <= lines:
      time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.2))
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
      killed += 1
    ended = process.wait() == 0
    for d in run_dirs(workdir):
      if (d / 'results.json').exists() and d not in finished:
        finished[d] = {p.name: p.read_bytes() for p in
                            (d / 'metrics.jsonl', d / 'results.json')}
    if ended:
      break
  return finished, killed


def without_timing(record):
  return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


def outputs(run_dir):
  """metrics.jsonl and results.json without the wall-time fields."""
  metrics = [without_timing(r) for r in files.read_jsonl(run_dir / 'metrics.jsonl')]
  results = without_timing(json.loads((run_dir / 'results.json').read_text()))
  return metrics, results


def sweep_dirs(workdir):
  return sorted(p for p in workdir.glob('latent*') if p.is_dir())


# The sweep: its members' run directories are the train binary's (the same
# RunDir, checkpoints and metrics lines), plus what a sweep adds (members
# never retrained, a common epoch to rewind to). The train binary's resume is
# also checked in process, killed at chosen points (tests/test_train.py).
@pytest.mark.slow
@pytest.mark.parametrize('args, run_dirs', [(SWEEP, sweep_dirs)], ids=['sweep'])
def test_killed_again_and_again_the_rerun_equals_an_uninterrupted_run(
    tmp_path, args, run_dirs):
  run(args, tmp_path / 'reference')
  reference = {d.relative_to(tmp_path / 'reference'): outputs(d)
               for d in run_dirs(tmp_path / 'reference')}

  workdir = tmp_path / 'killed'
  finished, killed = kill_at_random_moments(
      args, workdir, run_dirs, np.random.default_rng(20261124), kills=2)
  assert killed >= 2
  run(args, workdir)

  result = {d.relative_to(workdir): outputs(d) for d in run_dirs(workdir)}
  assert result.keys() == reference.keys()
  for name, (metrics, results) in result.items():
    assert [r['epoch'] for r in metrics] == list(range(1, NUM_EPOCHS + 1))
    assert metrics == reference[name][0], name
    assert results == reference[name][1], name
  for run_dir, contents in finished.items():  # never retrained or rewritten
    for file_name, data in contents.items():
      assert (run_dir / file_name).read_bytes() == data, run_dir
