"""A workdir in use: a second run stops at once and changes nothing.

Another process holds `files.WorkdirLock`, as a training run does for its
whole length (`rundir.RunDir`). That a run killed by SIGKILL leaves no stale
lock is also shown by tests/test_crash_resume.py, whose reruns after each
kill would be refused.
"""

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from vaejax import files

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGS = ['--dataset=linear_gaussian', '--likelihood=gaussian',
         '--hidden_dims=32', '--batch_size=50', '--num_epochs=6',
         '--eval_iwae_samples=20']
HOLD = ('import sys\nfrom vaejax import files\n'
        'lock = files.WorkdirLock(sys.argv[1])\n'
        "print('held', flush=True)\nsys.stdin.read()\n")


@pytest.fixture
def holder():
  """hold(workdir): a second process that holds the workdir's lock."""
  processes = []

  def hold(workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)],
                               cwd=REPO_ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    processes.append(process)
    assert process.stdout.readline() == 'held\n'
    return process

  yield hold
  for process in processes:
    process.kill()
    process.wait()


def snapshot(folder):
  """Every file under `folder` with its bytes and modification time."""
  return {p: (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(folder.rglob('*')) if p.is_file()}


def run(binary, workdir, flags):
  return subprocess.run(
      [sys.executable, '-m', f'experiments.{binary}', f'--workdir={workdir}',
       *flags], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def assert_refused_naming(result, process, workdir):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stdout[-2000:]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(f'error: --workdir={workdir} is in use by '
                             f'process {process.pid} on '), lines[0]


def test_the_lock_is_exclusive_names_its_holder_and_ends_with_it(tmp_path, holder):
  workdir = tmp_path / 'run'
  process = holder(workdir)
  with pytest.raises(files.InUseError,
                     match=f'in use by process {process.pid} on .*: wait for'):
    files.WorkdirLock(workdir)
  # SIGKILL: the kernel releases the lock, and the next run takes it.
  process.send_signal(signal.SIGKILL)
  process.wait()
  lock = files.WorkdirLock(workdir)
  assert (workdir / '.lock').read_text() == f'process {os.getpid()} on ' + (
      os.uname().nodename)
  lock.release()
  assert (workdir / '.lock').read_text() == ''
  files.WorkdirLock(workdir).release()  # released: taken again


def test_a_run_in_a_workdir_in_use_stops_at_once_and_changes_nothing(
    tmp_path, holder):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'metrics.jsonl').write_text('{"epoch": 1}\n')
  (workdir / 'config.json').write_text('{}\n')
  process = holder(workdir)
  before = snapshot(workdir)
  assert_refused_naming(run('train', workdir, [*FLAGS, '--latent_dim=2']),
                        process, workdir)
  assert snapshot(workdir) == before


def test_a_sweep_locks_every_member_before_it_trains(tmp_path, holder):
  workdir = tmp_path / 'sweep'
  second = workdir / 'latent002_seed0'
  process = holder(second)
  flags = [*FLAGS, '--latent_dims=1,2', '--seeds=0', '--novectorize']
  assert_refused_naming(run('sweep', workdir, flags), process, second)
  first = workdir / 'latent001_seed0'
  assert not (first / 'metrics.jsonl').exists()  # refused before training
  files.WorkdirLock(first).release()  # and the first member's lock released
