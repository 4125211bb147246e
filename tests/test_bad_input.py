"""Bad input at the door of both binaries: one line, non-zero, fast, nothing touched.

Each case runs `experiments.train` or `experiments.sweep` as a user would and
checks that it exits non-zero with exactly one line, `error: ...`, on
stderr, before it compiles anything (JAX logs each compilation) and within
5 seconds of CPU time (imports included; CPU time, so that a loaded machine
does not fail the case), and that the workdir is as it was: left uncreated when it did not
exist, byte for byte the same when it held a run. Each case is a fork of a
process that has imported the binary (`binary_server.py`), so the dozens of
cases do not import JAX dozens of times.
"""

import atexit
import functools
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import sweep
from vaejax import train
from binary_server import cpu_seconds  # pylint: disable=g-bad-import-order
import kill  # pylint: disable=g-bad-import-order

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# CPU seconds a refusal may spend after the binary's imports: a backstop
# (what it checks is below, LOG_COMPILES). The imports themselves are left
# out, since they cost what the machine makes them cost (up to 6 CPU seconds
# on the slower 2-core machines) and are the same for every case.
SECONDS = 5

TRAIN_FLAGS = ['--dataset=linear_gaussian', '--likelihood=gaussian',
               '--hidden_dims=16', '--batch_size=100', '--num_epochs=2',
               '--eval_iwae_samples=10']
SWEEP_FLAGS = [*TRAIN_FLAGS, '--latent_dims=1,3', '--seeds=0']


def interrupted(train_fn):
  """Runs `train_fn()` until it has saved its first checkpoint."""
  with kill.at_checkpoint(after=lambda epoch: True):
    train_fn()


def train_config(workdir):
  return config_lib.TrainConfig(
      workdir=str(workdir), dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(16,), latent_dim=2, batch_size=100, num_epochs=2,
      eval_iwae_samples=10, progress=False)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A train run and a sweep, each killed after its first checkpoint."""
  root = tmp_path_factory.mktemp('runs')
  interrupted(lambda: train.train_and_evaluate(train_config(root / 'train')))
  base = train_config(root / 'sweep')
  flags = sweep.SweepFlags(latent_dims=(1, 3), seeds=(0,), vectorize=False)
  interrupted(lambda: sweep.run(base, flags, log=lambda *_: None))
  return root


def largest_file(directory):
  return max((p for p in directory.rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def truncate(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def overwrite(path):
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(64)
  path.write_bytes(bytes(data))


DAMAGE = {
    'truncated': lambda c: truncate(largest_file(c / '1')),
    'overwritten': lambda c: overwrite(largest_file(c / '1')),
    'metadata deleted': lambda c: (c / '1' / 'default' / '_METADATA').unlink(),
    # No digest to compare with (a kill between the checkpoint and its
    # digest): orbax's reading fails, after the data are loaded.
    'truncated, no digest': lambda c: ((c / 'sha256.json').unlink(),
                                       truncate(largest_file(c / '1'))),
}


def snapshot(directory):
  if not directory.exists():
    return None
  return {p: p.read_bytes() for p in sorted(directory.rglob('*')) if p.is_file()}


def run_binary(binary, args, env=None, unprivileged=False):
  command = [sys.executable, '-m', f'experiments.{binary}', *args]
  if unprivileged:
    # Root without the capabilities that override file permissions: still
    # the owner of the checkout (readable wherever it lives, a private
    # mode-700 directory included) but bound by the workdir's mode bits.
    command = ['setpriv', '--bounding-set=-dac_override,-dac_read_search',
               *command]
  result, seconds = _timed(command, env)
  return result, seconds - _import_seconds(binary, unprivileged)


def _timed(command, env=None):
  """The finished `command` and the CPU seconds it took."""
  before = cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN))
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
  after = cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN))
  return result, after - before


@functools.cache
def _import_seconds(binary, unprivileged):
  """CPU seconds of a process that imports the binary and does nothing else."""
  command = [sys.executable, '-c', f'import experiments.{binary}']
  if unprivileged:
    command = ['setpriv', '--bounding-set=-dac_override,-dac_read_search',
               *command]
  result, seconds = _timed(command)
  assert result.returncode == 0, result.stderr[-2000:]
  return seconds


# JAX logs every compilation on stderr: a binary that compiled anything (to
# generate data, initialise a model, read a checkpoint) before refusing
# would print more than its one line. So "before any work" is checked
# whatever the machine's speed; the time limit is a backstop.
LOG_COMPILES = dict(os.environ, JAX_LOG_COMPILES='1')


class Servers:
  """One `binary_server.py` per binary: each case a fork of a loaded process.

  A case then costs what the binary does after its imports, not a new
  interpreter importing JAX again; its CPU time is that of the case alone,
  after the imports.
  """

  def __init__(self):
    self._servers = {}

    def close():
      for server in self._servers.values():
        server.stdin.close()
        server.wait(timeout=60)
    atexit.register(close)

  def run(self, binary, args):
    if binary not in self._servers:
      server = subprocess.Popen(
          [sys.executable, str(REPO_ROOT / 'tests' / 'binary_server.py'),
           f'experiments.{binary}'], cwd=REPO_ROOT, env=LOG_COMPILES,
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
      json.loads(server.stdout.readline())  # ready, its imports done
      self._servers[binary] = server
    server = self._servers[binary]
    with tempfile.TemporaryDirectory() as out:
      paths = {name: os.path.join(out, name) for name in ('stdout', 'stderr')}
      server.stdin.write(json.dumps({'args': args, **paths}) + '\n')
      server.stdin.flush()
      reply = json.loads(server.stdout.readline())
      output = {name: pathlib.Path(path).read_text() for name, path in paths.items()}
    result = subprocess.CompletedProcess(args, reply['returncode'], **output)
    return result, reply['cpu_seconds']  # after the imports, as run_binary's


SERVERS = Servers()


def assert_refused(binary, args, message, workdir, unprivileged=False,
                   limit=SECONDS, uses_device=False):
  before = snapshot(workdir)
  args = [f'--workdir={workdir}', *args]
  if uses_device or unprivileged:
    result, seconds = run_binary(binary, args, None if uses_device else LOG_COMPILES,
                                 unprivileged)
  else:
    result, seconds = SERVERS.run(binary, args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0, result.stdout[-2000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert message in lines[0], lines[0]
  assert seconds < limit, f'{seconds:.1f} CPU seconds'
  assert snapshot(workdir) == before


EMPTY = tempfile.gettempdir() + '/vaejax-no-such-dir'
MISSING_DATA = ['--dataset=binarized_mnist', f'--tfds_manual_dir={EMPTY}',
                f'--tfds_data_dir={EMPTY}']

TRAIN_CASES = [
    # Wrong types.
    (['--batch_size=abc'], 'flag --batch_size=abc'),
    (['--learning_rate=fast'], 'flag --learning_rate=fast'),
    (['--analytic_kl=maybe'], 'flag --analytic_kl=maybe'),
    (['--hidden_dims=500,abc'], '--hidden_dims takes comma-separated integers'),
    # Out of range.
    (['--latent_dim=0'], '--latent_dim must be positive'),
    (['--batch_size=0'], '--batch_size'),
    (['--batch_size=2001'], 'larger than the 2000 training examples'),
    (['--num_epochs=0'], '--num_epochs'),
    (['--learning_rate=0'], '--learning_rate must be positive'),
    (['--learning_rate=nan'], '--learning_rate must be positive'),
    (['--adam_b1=1'], '--adam_b1'),
    (['--beta=-1'], '--beta'),
    (['--eval_iwae_samples=0'], '--eval_iwae_samples'),
    (['--checkpoints_to_keep=0'], '--checkpoints_to_keep'),
    (['--gaussian_variance=-1'], '--gaussian_variance'),
    # Unknown names.
    (['--bogus=1'], "Unknown command line flag 'bogus'"),
    (['--batch_sise=100'], 'Did you mean: batch_size'),
    (['--dataset=cifar100'], 'unknown dataset'),
    (['--likelihood=poisson'], '--likelihood'),
    (['--optimizer=sgdd'], '--optimizer'),
    (['--objective=vae'], '--objective'),
    (['--lr_schedule=steps'], '--lr_schedule'),
    (['--lr_schedule=step'], '--lr_schedule=step needs --lr_decay_epochs'),
    (['--lr_schedule=step', '--lr_decay_epochs=5,5'], 'distinct positive epochs'),
    (['--lr_decay_factor=2'], '--lr_decay_factor must be in'),
    (['--weight_decay=-1'], '--weight_decay'),
    (['--objective=iwae', '--beta=0.5'], 'takes no --beta'),
    (['--architecture=transformer'], '--architecture'),
    (['--activation=sigmoidal'], '--activation'),
    (['extra_argument'], 'unexpected arguments: extra_argument'),
    # Contradictory combinations.
    (['--likelihood=bernoulli'], 'needs binary pixels'),
    (['--dynamic_binarization'], 'needs grey-level data'),
    (['--dataset=mnist', '--likelihood=bernoulli'], '--dynamic_binarization'),
    (['--num_validation=400'], 'linear_gaussian has a validation split of its own'),
    (['--dataset=mnist', '--dynamic_binarization', '--num_validation=60000'],
     '--num_validation must be 1 to 59999 (mnist has 60000 training images)'),
    (['--dataset=mnist', '--dynamic_binarization', '--num_validation=400',
      '--batch_size=59601'], 'larger than the 59600 training examples'),
    # Flags that the other flags make ineffective.
    (['--lr_decay_epochs=3'], '--lr_decay_epochs applies to --lr_schedule=step only'),
    (['--objective=iwae', '--noanalytic_kl'], '--noanalytic_kl has no effect here'),
    (['--optimizer=adagrad', '--adam_eps=1e-4'], '--adam_eps applies to --optimizer=adam'),
    (['--optimizer=adagrad', '--adam_variant=iwae_code'],
     '--adam_variant applies to --optimizer=adam'),
    (['--adam_variant=theano'], "--adam_variant='theano' is not one of"),
    # Posterior and prior families.
    (['--posterior=full'], "--posterior='full' is not one of"),
    (['--prior=vampprior'], "--prior='vampprior' is not one of"),
    (['--prior=vamp'], 'no closed-form KL(q || p): add --noanalytic_kl'),
    (['--prior=vamp', '--noanalytic_kl', '--posterior=full_covariance'],
     'needs --posterior=diagonal'),
    (['--prior=vamp', '--noanalytic_kl', '--vamp_components=0'],
     '--vamp_components must be positive'),
    (['--vamp_components=10'], '--vamp_components applies to --prior=vamp only'),
    (['--posterior=planar'],
     '--posterior=planar has no closed-form KL(q || p): add --noanalytic_kl'),
    (['--posterior=iaf', '--noanalytic_kl', '--prior=vamp'],
     'it needs --posterior=diagonal, not iaf'),
    (['--posterior=planar', '--objective=iwae', '--gradient_estimator=dreg'],
     '--posterior=planar has no usable log_prob(z)'),
    (['--posterior=iaf', '--noanalytic_kl', '--gradient_estimator=stl'],
     '--posterior=iaf has no usable log_prob(z)'),
    (['--flow_steps=3'], '--flow_steps applies to --posterior=planar and iaf only'),
    (['--posterior=planar', '--noanalytic_kl', '--flow_context_dim=4'],
     '--flow_context_dim applies to --posterior=iaf only'),
    (['--posterior=iaf', '--noanalytic_kl', '--flow_steps=0'],
     '--flow_steps must be positive'),
    (['--posterior=iaf', '--noanalytic_kl', '--flow_hidden_dims=0'],
     '--flow_hidden_dims'),
    (['--architecture=linear'], '--hidden_dims=16 has no effect here'),
    # Two stochastic layers.
    (['--top_latent_dim=-1'], '--top_latent_dim must be 0 (one layer) or positive'),
    (['--top_latent_dim=2', '--top_hidden_dims=0'],
     '--top_hidden_dims must be one or more positive widths'),
    (['--top_latent_dim=2', '--prior=learned_diagonal'],
     'needs --prior=standard_normal, got --prior=learned_diagonal'),
    (['--top_latent_dim=2', '--posterior=full_covariance'],
     'needs --posterior=diagonal, got --posterior=full_covariance'),
    (['--top_hidden_dims=8'], '--top_hidden_dims applies to --top_latent_dim above 0'),
    # Gradient estimators and bounds without a definition for the flags.
    (['--gradient_estimator=dreg', '--noanalytic_kl'],
     'for the ELBO use --gradient_estimator=stl'),
    (['--objective=ciwae', '--ciwae_beta=2'], '--ciwae_beta must be in [0, 1]'),
    (['--objective=iwae', '--num_groups=3'],
     '--num_groups=3 has no effect here: --num_groups applies to --objective=miwae and piwae'),
    # Missing data files.
    (MISSING_DATA, 'missing: binarized_mnist_train.amat'),
]


@pytest.mark.parametrize('args, message', TRAIN_CASES,
                         ids=[' '.join(a) for a, _ in TRAIN_CASES])
def test_train_refuses_bad_flags(tmp_path, args, message):
  assert_refused('train', [*TRAIN_FLAGS, *args], message, tmp_path / 'new')


NPZ_CASES = [
    # A user's arrays: unfit files, and values the likelihood cannot take.
    ({'train': 0.5, 'valid': 0.5}, [], 'needs the arrays train, valid and test'),
    ({'train': 0.5, 'valid': 0.5, 'test': 0.5}, ['--likelihood=bernoulli'],
     'has real values'),
    ({'train': 1, 'valid': 0, 'test': 1}, ['--dynamic_binarization'],
     'has binary values'),
    ({'train': 9, 'valid': 0, 'test': 1}, ['--likelihood=bernoulli'],
     'add --dynamic_binarization'),
]


@pytest.mark.parametrize('binary', ['train', 'sweep'])
@pytest.mark.parametrize('fills, args, message', NPZ_CASES,
                         ids=[m for _, _, m in NPZ_CASES])
def test_a_npz_dataset_unfit_for_the_flags_is_refused(tmp_path, binary, fills,
                                                      args, message):
  path = tmp_path / 'mine.npz'
  np.savez(path, **{split: np.full((200, 4, 4), value, type(value))
                    for split, value in fills.items()})
  flags = TRAIN_FLAGS if binary == 'train' else SWEEP_FLAGS
  assert_refused(binary, [*flags, f'--dataset={path}', *args], message,
                 tmp_path / 'new')


SWEEP_CASES = [
    (['--seeds=a'], '--seeds takes comma-separated integers'),
    (['--latent_dims=2,x'], '--latent_dims takes comma-separated integers'),
    (['--vectorize=maybe'], 'flag --vectorize=maybe'),
    (['--latent_dims='], '--latent_dims must be one or more positive sizes'),
    (['--latent_dims=2,0'], '--latent_dims must be one or more positive sizes'),
    (['--latent_dims=-3'], '--latent_dims must be one or more positive sizes'),
    (['--batch_size=5000'], 'larger than the 2000 training examples'),
    (['--learning_rate=-1'], '--learning_rate must be positive'),
    (['--top_latent_dim=2', '--vectorize'], 'its members train one after another'),
    (['--posterior=iaf', '--noanalytic_kl', '--vectorize'],
     '--posterior=iaf cannot pad exactly'),
    (['--top_latent_dims=2'],
     '--top_latent_dims sweeps z_2 at one size of z, got --latent_dims=1,3'),
    (['--latent_dims=3', '--top_latent_dims=2,0'],
     '--top_latent_dims must be positive sizes, got 2,0'),
    (['--latent_dims=3', '--top_latent_dims=2', '--vectorize'],
     'its members train one after another'),
    (['--bogus=1'], "Unknown command line flag 'bogus'"),
    (['--dataset=cifar100'], 'unknown dataset'),
    (['summarise'], 'the only command is `summarize`'),
    (['--latent_dims=2,5,2'], 'duplicate members: latent002_seed0'),
    (['--seeds=1,1'], 'duplicate members'),
    (['--shard=2/2'], '--shard must be i/n'),
    (['--shard=a/b'], '--shard must be i/n'),
    (['--shard=1'], '--shard must be i/n'),
    (['--likelihood=bernoulli'], 'needs binary pixels'),
    (MISSING_DATA, 'missing: binarized_mnist_train.amat'),
]


@pytest.mark.parametrize('args, message', SWEEP_CASES,
                         ids=[' '.join(a) for a, _ in SWEEP_CASES])
def test_sweep_refuses_bad_flags(tmp_path, args, message):
  assert_refused('sweep', [*SWEEP_FLAGS, *args], message, tmp_path / 'new')


def test_sweep_without_latent_dims_checks_latent_dim(tmp_path):
  assert_refused('sweep', [*TRAIN_FLAGS, '--latent_dim=0'],
                 '--latent_dim must be positive, got 0', tmp_path / 'new')


def test_sweep_of_the_two_layer_presets_top_layer_gets_to_the_data(tmp_path):
  # The preset's --latent_dim and --top_latent_dim, then --top_latent_dims:
  # every member's flags check out, and only the data are missing.
  args = ['--flagfile=experiments/flags/burda_table1_two_layer.flags',
          '--top_latent_dims=10,20', f'--tfds_manual_dir={EMPTY}',
          f'--tfds_data_dir={EMPTY}']
  assert_refused('sweep', args, 'missing: train-images-idx3-ubyte.gz',
                 tmp_path / 'new')


@pytest.mark.parametrize('binary, flags, message', [
    ('train', [*TRAIN_FLAGS, '--latent_dim=3'], '--latent_dim (2 there, 3 now)'),
    ('train', [*TRAIN_FLAGS, '--latent_dim=2', '--learning_rate=0.01'],
     '--learning_rate'),
    ('sweep', [*SWEEP_FLAGS, '--latent_dims=1,4'], '--latent_dims ([1, 3] there'),
    # Without --latent_dims, the sweep is of --latent_dim's one size (a preset's).
    ('sweep', [*TRAIN_FLAGS, '--seeds=0', '--latent_dim=3'],
     '--latent_dims ([1, 3] there, [3] now)'),
    ('sweep', [*SWEEP_FLAGS, '--latent_dims=3', '--top_latent_dims=2'],
     "--top_latent_dims (None there, [2] now)"),
    ('sweep', [*SWEEP_FLAGS, '--hidden_dims=32'], '--hidden_dims'),
])
def test_a_workdir_holding_another_run_is_refused(runs, tmp_path, binary, flags,
                                                  message):
  workdir = shutil.copytree(runs / binary, tmp_path / binary)
  assert_refused(binary, flags, message, workdir)


@pytest.mark.parametrize('damage', DAMAGE)
@pytest.mark.parametrize('binary', ['train', 'sweep'])
def test_a_damaged_checkpoint_is_refused(runs, tmp_path, binary, damage):
  workdir = shutil.copytree(runs / binary, tmp_path / binary)
  if binary == 'train':
    flags, checkpoints = [*TRAIN_FLAGS, '--latent_dim=2'], workdir / 'checkpoints'
  else:
    # Members one at a time, as the run was made: a vectorised job (the
    # default on a GPU) rewinds every member to epoch 0, the last epoch all
    # have, and never reads the damaged one.
    flags = [*SWEEP_FLAGS, '--novectorize']
    checkpoints = workdir / 'latent001_seed0' / 'checkpoints'
  DAMAGE[damage](checkpoints)
  # Without a digest, the damage shows only when orbax reads the checkpoint
  # (onto the device).
  no_digest = 'no digest' in damage
  assert_refused(binary, flags, 'checkpoint of epoch 1', workdir,
                 limit=60 if no_digest else SECONDS, uses_device=no_digest)


def test_a_failed_restore_in_process_leaves_the_process_as_it_was(runs, tmp_path):
  # As in a notebook: the error, and stderr and the unraisable hook as they
  # were (only the binaries change them, as they exit).
  workdir = shutil.copytree(runs / 'train', tmp_path / 'train')
  DAMAGE['truncated, no digest'](workdir / 'checkpoints')
  stderr, hook = sys.stderr, sys.unraisablehook
  with pytest.raises(checkpoint.CheckpointError, match='cannot restore'):
    train.train_and_evaluate(train_config(workdir))
  assert sys.stderr is stderr and sys.unraisablehook is hook


def test_in_a_binary_a_failed_restore_stays_quiet_to_the_exit(runs, tmp_path,
                                                             monkeypatch):
  # A binary (`config.start_binary`) ends at the error: orbax's threads go on
  # failing after it, so from the failure on only the main thread writes to
  # stderr and unraisable reports are dropped (the race that could add their
  # tracebacks to the one line).
  workdir = shutil.copytree(runs / 'train', tmp_path / 'train')
  DAMAGE['truncated, no digest'](workdir / 'checkpoints')
  for name in ('stderr', 'unraisablehook'):  # put back after the test
    monkeypatch.setattr(sys, name, getattr(sys, name))
  monkeypatch.setattr(checkpoint, '_QUIET_AFTER_FAILURE', False)
  checkpoint.quiet_after_a_failed_restore()
  stderr, hook = sys.stderr, sys.unraisablehook
  with pytest.raises(checkpoint.CheckpointError, match='cannot restore'):
    train.train_and_evaluate(train_config(workdir))
  assert isinstance(sys.stderr, checkpoint.MainThreadOnly)
  assert sys.unraisablehook is not hook
  sys.stderr = stderr


@pytest.mark.parametrize('args, message', [
    ([], 'holds no finished run (results.json is missing)'),
    (['--iwae_samples=0'], '--iwae_samples and --repeats must be positive'),
    (['--repeats=x'], 'flag --repeats=x'),
    (['--params=best'], 'flag --params=best'),
])
def test_evaluate_refuses_bad_flags(tmp_path, args, message):
  assert_refused('evaluate', args, message, tmp_path / 'new')


def test_evaluate_refuses_an_unfinished_run(runs, tmp_path):
  workdir = shutil.copytree(runs / 'train', tmp_path / 'train')
  assert_refused('evaluate', [], 'holds no finished run', workdir)


@pytest.mark.parametrize('binary', ['train', 'sweep'])
def test_a_read_only_workdir_is_refused(runs, tmp_path, binary):
  # Root may write anywhere: as root, the binary runs without the
  # capabilities that override file permissions.
  unprivileged = os.geteuid() == 0
  if unprivileged and shutil.which('setpriv') is None:
    pytest.skip('running as root without setpriv to drop capabilities')
  flags = [*TRAIN_FLAGS, '--latent_dim=2'] if binary == 'train' else SWEEP_FLAGS
  workdir = shutil.copytree(runs / binary, tmp_path / binary)
  for path in [workdir, *workdir.rglob('*')]:
    os.chmod(path, 0o555 if path.is_dir() else 0o444)
  try:
    assert_refused(binary, flags, 'is not writable', workdir,
                   unprivileged=unprivileged)
  finally:
    for path in [workdir, *workdir.rglob('*')]:
      os.chmod(path, 0o755)


# The binaries on a trained run: nothing is written into it, and nothing is
# compiled before the refusal. On a new folder, or on the run killed after
# its first checkpoint (unfinished: no final parameters).
RUN_CASES = [
    ('generate', False, [], 'holds no vaejax run: it has no config.json'),
    ('embed', False, [], 'holds no vaejax run: it has no config.json'),
    ('generate', True, [], 'has not finished (no results.json)'),
    ('embed', True, [], 'has not finished (no results.json)'),
    ('generate', True, ['--params=best'], '--params must be one of final, last'),
    ('embed', True, ['--params=7'], 'has no checkpoint of epoch 7'),
    ('generate', True, ['--split=dev'], '--split must be one of train, valid, test'),
    ('embed', True, ['--split=dev'], '--split must be one of train, valid, test'),
    ('generate', True, ['--params=last', '--num_samples=0'],
     '--num_samples must be at least 1'),
    ('generate', True, ['--params=last', '--interpolation_steps=1'],
     '--interpolation_steps must be at least 2'),
    ('generate', True, ['--params=last', '--traverse_range=0'],
     '--traverse_range must be positive'),
    ('generate', True, ['--params=last', '--num_interpolations=300'],
     'needs 600 examples of the test split, which has 500'),
    ('generate', True, ['--params=last', '--split=valid', '--traverse_example=500'],
     'needs 501 examples of the valid split, which has 500'),
]


@pytest.mark.parametrize('binary, on_run, args, message', RUN_CASES,
                         ids=[f'{b} {" ".join(a)}' for b, _, a, _ in RUN_CASES])
def test_the_binaries_on_a_run_refuse_bad_input(runs, tmp_path, binary, on_run,
                                                args, message):
  workdir = (shutil.copytree(runs / 'train', tmp_path / 'train') if on_run
             else tmp_path / 'new')
  assert_refused(binary, args, message, workdir)
