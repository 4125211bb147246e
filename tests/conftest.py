"""Strict JAX settings for the suite, and the float64 process.

`pytest` runs the suite in float32, JAX's default. `pytest --x64` is a separate
process with `jax_enable_x64`: it runs only the tests marked `float64` (the
numerics), with the `dtype` fixture set to float64 and tolerances to match.
`make test` runs both.

The suite shares one persistent compilation cache ($JAX_COMPILATION_CACHE_DIR
if set, else a folder of the test cache below, keyed by the jax and jaxlib
versions): the test workers, every binary the tests start, and later runs
load the programs others compiled before, instead of compiling the same
small programs again and again. JAX keys an entry by the program, the
compile options, the versions and the device, and a cached executable is the
compiler's output for that program, so results are those of a fresh compile.
A first run on a machine compiles everything; the cache is emptied when it
outgrows `_COMPILATION_CACHE_LIMIT`.
"""

import fcntl
import hashlib
import importlib.metadata
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import pytest

from vaejax import data

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
  parser.addoption(
      '--x64', action='store_true',
      help='enable jax_enable_x64 and run only the tests marked float64')


_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_PARTIAL_ENTRY = 'Error reading persistent compilation cache entry'


_COMPILATION_CACHE_LIMIT = 2 << 30  # bytes


def _compilation_cache_dir():
  """The shared compilation cache of this jax and jaxlib, emptied when too big."""
  versions = '-'.join(importlib.metadata.version(p) for p in ('jax', 'jaxlib'))
  path = suite_cache_root() / f'jax-{versions}'
  size = sum(f.stat().st_size for f in path.glob('*') if f.is_file()) if (
      path.is_dir()) else 0
  if size > _COMPILATION_CACHE_LIMIT:
    shutil.rmtree(path, ignore_errors=True)
  path.mkdir(parents=True, exist_ok=True)
  return str(path)


def _share_compilation_cache(config):
  """One compilation cache for this run, its xdist workers and subprocesses."""
  if not os.environ.get(_CACHE_ENV):  # the first pytest process of the run
    os.environ[_CACHE_ENV] = _compilation_cache_dir()
  # JAX writes an entry in place, so a process may read one that another is
  # still writing; it then warns and compiles the program itself (same
  # result). The warning would add a line to the stderr that the binaries'
  # tests read, so it is ignored in this run, its workers and subprocesses.
  ignore = f'ignore:{_PARTIAL_ENTRY}:UserWarning'
  if ignore not in os.environ.get('PYTHONWARNINGS', ''):
    os.environ['PYTHONWARNINGS'] = ','.join(
        w for w in (os.environ.get('PYTHONWARNINGS'), ignore) if w)
  config.addinivalue_line('filterwarnings', ignore)
  # Cache every program, however small or quick to compile.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_configure(config):
  _share_compilation_cache(config)
  config.addinivalue_line(
      'markers', 'float64: numerics that run again in float64 under --x64')
  config.addinivalue_line(
      'markers', 'real_data: needs the offline MNIST files (skips without them)')
  config.addinivalue_line(
      'markers', 'slow: over half a minute; CI runs them (-m "not slow" skips)')
  config.addinivalue_line(
      'markers', "jax_defaults: runs at JAX's default matmul precision and "
      'rank promotion, as users run the library')
  # Implicit rank promotion hides shape bugs ([B] + [B, 1] -> [B, B]).
  jax.config.update('jax_numpy_rank_promotion', 'raise')
  # The suite checks the math: full float32 matrix products on every
  # platform (already so on CPU; a GPU's default is TF32, under which a
  # network's vmap and loop round differently). The library's own
  # formulas run at 'highest' anyway (vaejax/precision.py; tested in
  # test_distributions.py).
  jax.config.update('jax_default_matmul_precision', 'highest')
  if config.getoption('--x64'):
    jax.config.update('jax_enable_x64', True)


# The modules that take longest (seconds of test time on a 2-core machine,
# from `pytest --durations=0`), run first: xdist hands whole modules
# (--dist loadscope) to the workers in collection order (the Makefile's
# --no-loadscope-reorder; by default xdist would order them by their number
# of tests), and the longest first keeps both workers busy to the end
# instead of leaving one with test_sweep.py while the other has finished.
_LONGEST_FIRST = ('test_sweep.py', 'test_train.py', 'test_data.py',
                  'test_real_mnist.py',
                  'test_families_nets.py', 'test_bad_input.py',
                  'test_crash_resume.py', 'test_lock.py', 'test_presets.py',
                  'test_models.py', 'test_readme.py', 'test_nets.py')


def _module_rank(item):
  name = item.path.name
  return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)


def pytest_ignore_collect(collection_path, config):
  """Under --x64, skips importing test modules that mark nothing float64."""
  if (config.getoption('--x64') and collection_path.suffix == '.py'
      and collection_path.name.startswith('test_')
      and 'mark.float64' not in collection_path.read_text()):
    return True
  return None


def pytest_collection_modifyitems(config, items):
  items.sort(key=_module_rank)  # stable: the order within a module stays
  if not config.getoption('--x64'):
    return
  selected = [item for item in items if item.get_closest_marker('float64')]
  deselected = [item for item in items if not item.get_closest_marker('float64')]
  config.hook.pytest_deselected(items=deselected)
  items[:] = selected


@pytest.fixture(autouse=True)
def _jax_defaults(request):
  """JAX's own defaults for the tests marked `jax_defaults`.

  The rest of the suite checks the math under strict settings (above); these
  run the library as a user's process does. The binaries the tests start
  run at the defaults too (the settings above are this process's).
  """
  if request.node.get_closest_marker('jax_defaults') is None:
    yield
    return
  strict = {name: getattr(jax.config, name) for name in _STRICT}
  for name, default in _STRICT.items():
    jax.config.update(name, default)
  try:
    yield
  finally:
    for name, value in strict.items():
      jax.config.update(name, value)


# The suite's strict settings and JAX's defaults for them.
_STRICT = {'jax_default_matmul_precision': None,
           'jax_numpy_rank_promotion': 'allow'}


@pytest.fixture
def dtype(request):
  """float64 in the --x64 process, float32 otherwise."""
  return jnp.float64 if request.config.getoption('--x64') else jnp.float32


@pytest.fixture
def tol(dtype):
  """tol(float32_value, float64_value) picks the tolerance for `dtype`."""
  return lambda float32, float64: (
      float64 if jnp.dtype(dtype) == jnp.float64 else float32)


def manual_dir_root():
  """The offline dataset files: $VAEJAX_TFDS_MANUAL_DIR, else ../shared/data."""
  root = os.environ.get(data.MANUAL_DIR_ENV) or REPO_ROOT.parent / 'shared' / 'data'
  return pathlib.Path(root)


# Prepared TFDS datasets, shared by every run on this machine: preparing
# binarized_mnist and mnist from their manual files takes about a minute, the
# same every time. Under $VAEJAX_TEST_CACHE, else the user's cache directory
# (never the checkout), in a folder keyed by the TFDS version and the manual
# files' digests, so new files or a new TFDS prepare afresh; preparing is
# what a user's first run does, so a fresh machine still tests it.
_TEST_CACHE_ENV = 'VAEJAX_TEST_CACHE'
REAL_DATASETS = ('binarized_mnist', 'mnist')


def suite_cache_root():
  """$VAEJAX_TEST_CACHE, else vaejax/tests in the user's cache directory."""
  cache = os.environ.get(_TEST_CACHE_ENV) or (
      pathlib.Path(os.environ.get('XDG_CACHE_HOME') or '~/.cache').expanduser()
      / 'vaejax' / 'tests')
  return pathlib.Path(cache)


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _prepared_data_dir(root):
  """The shared TFDS data dir for the manual files under `root`."""
  version = importlib.metadata.version('tensorflow-datasets')
  key = hashlib.sha256(version.encode())
  for name in REAL_DATASETS:
    for path in sorted((root / name).iterdir()):
      key.update(f'{name}/{path.name}:{_sha256(path)}\n'.encode())
  data_dir = (suite_cache_root() / f'tfds-{version}-{key.hexdigest()[:16]}'
              / 'tensorflow_datasets')
  data_dir.mkdir(parents=True, exist_ok=True)
  return data_dir


def _prepared(name):
  """(tfds_data_dir, tfds_manual_dir) with `name` prepared, or a skip.

  One process prepares while the others wait (an flock); the data dir is
  shared by runs (above).
  """
  root = manual_dir_root()
  if not all((root / name).is_dir() for name in REAL_DATASETS):
    pytest.skip(f'no offline dataset files in {root}: set '
                f'${data.MANUAL_DIR_ENV} to a TFDS manual-dir root')
  data_dir = _prepared_data_dir(root)
  with open(data_dir.parent / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    data.load(name, tfds_data_dir=data_dir, tfds_manual_dir=root)
  return data_dir, root


@pytest.fixture(scope='session')
def tfds_dirs():
  """The TFDS dirs with binarized_mnist prepared (`_prepared`)."""
  return _prepared('binarized_mnist')


@pytest.fixture(scope='session')
def mnist_tfds_dirs():
  """The TFDS dirs with mnist prepared (`_prepared`)."""
  return _prepared('mnist')
