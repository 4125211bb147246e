"""A workdir in use: a second run stops at once, and the first is unchanged.

That a run killed by SIGKILL leaves no stale lock is shown by
tests/test_crash_resume.py, whose reruns after each kill would be refused.
"""

import json
import pathlib
import subprocess
import sys
import time

from vaejax import files

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMING_FIELDS = ('epoch_seconds', 'examples_per_second', 'compile_seconds',
                 'train_seconds')
FLAGS = ['--dataset=linear_gaussian', '--likelihood=gaussian',
         '--hidden_dims=32', '--batch_size=50', '--num_epochs=6',
         '--eval_iwae_samples=20', '--latent_dim=2']
SWEEP_FLAGS = [*FLAGS[:-1], '--latent_dims=1,2', '--seeds=0', '--novectorize']


def command(binary, workdir, flags=FLAGS):
  return [sys.executable, '-m', f'experiments.{binary}', f'--workdir={workdir}',
          *flags]


def start(binary, workdir, flags=FLAGS):
  return subprocess.Popen(command(binary, workdir, flags), cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)


def run(binary, workdir, flags=FLAGS):
  return subprocess.run(command(binary, workdir, flags), cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)


def wait_for(condition, process):
  while not condition():
    assert process.poll() is None, process.stderr.read()[-3000:]
    time.sleep(0.01)


def held(lock_dir):
  lock = lock_dir / '.lock'
  return lock.exists() and lock.read_text().startswith('process ')


def outputs(workdir):
  metrics = [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
             for r in files.read_jsonl(workdir / 'metrics.jsonl')]
  results = json.loads((workdir / 'results.json').read_text())
  return metrics, {k: v for k, v in results.items() if k not in TIMING_FIELDS}


def assert_refused_naming(result, process, workdir):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stdout[-2000:]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(f'error: --workdir={workdir} is in use by '
                             f'process {process.pid} on '), lines[0]


def test_a_second_run_in_a_workdir_in_use_stops_and_the_first_is_unchanged(
    tmp_path):
  workdir = tmp_path / 'run'
  first = start('train', workdir)
  wait_for(lambda: held(workdir), first)
  # The same command again, while the first trains.
  assert_refused_naming(run('train', workdir), first, workdir)
  assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
  assert not held(workdir)
  alone = tmp_path / 'alone'
  assert run('train', alone).returncode == 0
  assert outputs(workdir) == outputs(alone)  # every epoch once, same numbers


def test_a_sweep_holds_its_members_folders(tmp_path):
  workdir = tmp_path / 'sweep'
  sweep = start('sweep', workdir, SWEEP_FLAGS)
  member = workdir / 'latent001_seed0'
  wait_for(lambda: held(member), sweep)
  # The same sweep again, and the train binary on one of its members.
  assert_refused_naming(run('sweep', workdir, SWEEP_FLAGS), sweep, member)
  member_flags = [f for f in FLAGS if not f.startswith('--latent_dim')]
  assert_refused_naming(run('train', member, [*member_flags, '--latent_dim=1']),
                        sweep, member)
  assert sweep.wait(timeout=300) == 0, sweep.stderr.read()[-3000:]
  assert (member / 'results.json').exists()
