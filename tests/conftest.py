"""Strict JAX settings for the suite, and the float64 process.

`pytest` runs the suite in float32, JAX's default. `pytest --x64` is a separate
process with `jax_enable_x64`: it runs only the tests marked `float64` (the
numerics), with the `dtype` fixture set to float64 and tolerances to match.
`make test` runs both.
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import pytest

from vaejax import data

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
  parser.addoption(
      '--x64', action='store_true',
      help='enable jax_enable_x64 and run only the tests marked float64')


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'float64: numerics that run again in float64 under --x64')
  config.addinivalue_line(
      'markers', 'real_data: needs the offline MNIST files (skips without them)')
  config.addinivalue_line(
      'markers', 'slow: over half a minute; CI runs them (-m "not slow" skips)')
  # Implicit rank promotion hides shape bugs ([B] + [B, 1] -> [B, B]).
  jax.config.update('jax_numpy_rank_promotion', 'raise')
  if config.getoption('--x64'):
    jax.config.update('jax_enable_x64', True)


def pytest_collection_modifyitems(config, items):
  if not config.getoption('--x64'):
    return
  selected = [item for item in items if item.get_closest_marker('float64')]
  deselected = [item for item in items if not item.get_closest_marker('float64')]
  config.hook.pytest_deselected(items=deselected)
  items[:] = selected


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


@pytest.fixture(scope='session')
def tfds_dirs(tmp_path_factory):
  """(tfds_data_dir, tfds_manual_dir) for the real datasets, or a skip.

  The data dir is new for the session, so the tests prepare the datasets
  from the manual dir exactly as a user's first run does.
  """
  root = manual_dir_root()
  if not (root / 'binarized_mnist').is_dir():
    pytest.skip(f'no offline dataset files in {root}: set '
                f'${data.MANUAL_DIR_ENV} to a TFDS manual-dir root')
  return tmp_path_factory.mktemp('tensorflow_datasets'), root
