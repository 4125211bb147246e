"""Datasets held whole in memory: TFDS image datasets and an exact generated one.

A dataset is loaded once into NumPy arrays (uint8 images, about 50 MB for
MNIST) with train / validation / test splits; the trainer puts it on the
device once. Datasets:

| name              | source                         | splits (train / valid / test)          | pixels |
| ----------------- | ------------------------------ | -------------------------------------- | ------ |
| `binarized_mnist` | TFDS, Larochelle's fixed binarization | 50,000 / 10,000 / 10,000        | {0, 1} |
| `mnist`           | TFDS                           | train[:50000] / train[50000:] / test   | 0..255 |
| `fashion_mnist`   | TFDS                           | train[:50000] / train[50000:] / test   | 0..255 |
| `linear_gaussian` | generated (`linear_gaussian.py`) | 2,000 / 500 / 500, 8x8x1 real values | real   |
| `linear_gaussian_correlated` | generated, W's columns not orthogonal | as above          | real   |
| `PATH.npz`        | the user's arrays (`np.savez`)   | its `train` / `valid` / `test` arrays  | any    |

`mnist` and `fashion_mnist` have no validation split in TFDS: the last 10,000
training images are held out as validation, the first 50,000 are trained on
(`num_validation` sets how many are held out: Burda et al.'s code holds out
400).

TFDS datasets are read from `tfds_data_dir` once prepared there. An unprepared
dataset is prepared from a manual dir, `<tfds_manual_dir>/<name>/` holding the
files the TFDS builder downloads, or else downloaded by TFDS as usual.
Preparing needs TensorFlow; reading a prepared dataset does not.

A user's own data come as a `.npz` file (`np.savez(path, train=..., valid=...,
test=...)`), each array `[N, H, W]` or `[N, H, W, C]`. What the values are is
read from them: integers in {0, 1} (or booleans, or floats that are all 0.0
and 1.0) are binary pixels, other integers in 0..255 grey levels, other floats
real values (stored as float32); the likelihood is then checked against them
as for the named datasets.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import logging
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import linear_gaussian
from vaejax import rng

# Environment variable giving the default manual-dir root (one folder per
# dataset), so that tests and Makefiles find offline copies of the files.
MANUAL_DIR_ENV = 'VAEJAX_TFDS_MANUAL_DIR'


class DataError(ValueError):
  """A dataset cannot be loaded; the message says what to do, in one line."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What is known of a dataset before loading it.

  Attributes:
    name: the dataset's name (`--dataset`).
    pixels: 'binary' ({0, 1}), 'grey' (0..255 uint8) or 'real' (float32).
    image_shape: `(H, W, C)` of one example.
    sizes: examples in train, validation and test.
    files: for TFDS datasets, the files of its manual dir.
    url: where TFDS downloads `files[0]` from, probed before a download.
    tfds_splits: TFDS split names read for train, validation and test; a
      validation of None is carved from the end of train.
  """
  name: str
  pixels: str
  image_shape: tuple[int, int, int]
  sizes: tuple[int, int, int]
  files: tuple[str, ...] = ()
  url: str | None = None
  tfds_splits: tuple[str, str | None, str] = ('train', None, 'test')


_MNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')

DATASETS = {
    'binarized_mnist': DatasetSpec(
        'binarized_mnist', 'binary', (28, 28, 1), (50_000, 10_000, 10_000),
        files=('binarized_mnist_train.amat', 'binarized_mnist_valid.amat',
               'binarized_mnist_test.amat'),
        url='http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_train.amat',
        tfds_splits=('train', 'validation', 'test')),
    'mnist': DatasetSpec(
        'mnist', 'grey', (28, 28, 1), (50_000, 10_000, 10_000),
        files=_MNIST_FILES,
        url='https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz'),
    'fashion_mnist': DatasetSpec(
        'fashion_mnist', 'grey', (28, 28, 1), (50_000, 10_000, 10_000),
        files=_MNIST_FILES,
        url='http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz'),
    'linear_gaussian': DatasetSpec(
        'linear_gaussian', 'real', (8, 8, 1), (2000, 500, 500)),
    'linear_gaussian_correlated': DatasetSpec(
        'linear_gaussian_correlated', 'real', (8, 8, 1), (2000, 500, 500)),
}

# The generated datasets: (latent size, correlation of W's columns) of the
# fixed models that generate them, both with noise 0.5. The correlated one's
# exact posterior has a full covariance; the best diagonal one falls short of
# log p(x) by 1.52 nats per example (`LinearGaussian.mean_field_gap`).
_GENERATED = {'linear_gaussian': (4, 0.0), 'linear_gaussian_correlated': (6, 0.9)}
_GENERATED_NOISE_STD = 0.5


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset in memory.

  Attributes:
    spec: its `DatasetSpec`.
    train: `[N, H, W, C]` training examples (uint8, or float32 for 'real').
    valid: `[N_valid, H, W, C]` validation examples.
    test: `[N_test, H, W, C]` test examples.
    test_log_marginal: `[N_test]` true log p(x) of the test examples, where
      the generating model is known (`linear_gaussian`); else None.
  """
  spec: DatasetSpec
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  test_log_marginal: np.ndarray | None = None


def to_inputs(x, key, *, pixels, dynamic_binarization):
  """Stored examples -> float32 model inputs.

  Binary pixels become 0./1.; grey levels become x / 255, or, with dynamic
  binarization, a Bernoulli(x / 255) draw from `key`; real values pass.
  """
  x = x.astype(jnp.float32)
  if pixels != 'grey':
    return x
  x = x / 255.0
  if dynamic_binarization:
    return jax.random.bernoulli(key, x).astype(jnp.float32)
  return x


def input_mean(x, *, pixels):
  """`[H, W, C]` float32 mean of the model inputs of examples `x`.

  Grey levels count as x / 255, also under dynamic binarization (the mean of
  its Bernoulli(x / 255) draws).
  """
  mean = np.mean(x, axis=0, dtype=np.float64)
  return (mean / 255.0 if pixels == 'grey' else mean).astype(np.float32)


def eval_inputs(x, *, pixels, dynamic_binarization, split_index):
  """An evaluation split as float32 model inputs on the device.

  Grey levels under dynamic binarization are binarized once, with the fixed
  key of the split (`rng.eval_binarize_key`), the same for every run.
  """
  return jax.jit(to_inputs, static_argnames=('pixels', 'dynamic_binarization'))(
      jnp.asarray(x), rng.eval_binarize_key(split_index), pixels=pixels,
      dynamic_binarization=dynamic_binarization)


def is_file(name):
  """Whether `name` is a user's `.npz` file rather than a named dataset."""
  return name.endswith('.npz')


def get_spec(name, num_validation=None):
  """The `DatasetSpec` of `name`, or a `DataError` naming the known ones.

  For a `.npz` file this reads and checks the file (once per process).

  Args:
    name: a key of `DATASETS`, or a `.npz` path.
    num_validation: for a dataset whose validation images are held out of
      its training split (mnist, fashion_mnist), how many (the last ones);
      None: as `DATASETS` has it (10,000). Other datasets have a split of
      their own and refuse it.
  """
  if is_file(name):
    spec = _read_file(name).spec
  elif name not in DATASETS:
    raise DataError(
        f'unknown dataset {name!r}; known: {", ".join(sorted(DATASETS))}, '
        'or a .npz file of train, valid and test arrays')
  else:
    spec = DATASETS[name]
  if num_validation is None:
    return spec
  if spec.tfds_splits[1] is not None or not spec.files:
    raise DataError(
        f'--num_validation applies to the datasets whose validation images '
        f'are held out of train (mnist, fashion_mnist); {spec.name} has a '
        'validation split of its own')
  num_train, num_valid, num_test = spec.sizes
  total = num_train + num_valid
  if not 0 < num_validation < total:
    raise DataError(f'--num_validation must be 1 to {total - 1} ({spec.name} '
                    f'has {total} training images), got {num_validation}')
  return dataclasses.replace(
      spec, sizes=(total - num_validation, num_validation, num_test))


def default_manual_dir():
  """The manual-dir root from $VAEJAX_TFDS_MANUAL_DIR, or None."""
  return os.environ.get(MANUAL_DIR_ENV) or None


def load(name, *, tfds_data_dir=None, tfds_manual_dir=None,
         num_validation=None):
  """Loads dataset `name` whole into memory, preparing it first if needed.

  Args:
    name: a key of `DATASETS`.
    tfds_data_dir: where TFDS keeps prepared datasets; None for TFDS's
      default (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    tfds_manual_dir: a root holding one folder per dataset,
      `<root>/<name>/`, with the files the TFDS builder downloads.
    num_validation: the training images held out as validation, as in
      `get_spec`.

  Returns:
    A `Dataset`.

  Raises:
    DataError: with a one-line message, if the dataset cannot be had.
  """
  spec = get_spec(name, num_validation)
  if is_file(name):
    dataset = _read_file(name)
  elif spec.name in _GENERATED:
    dataset = _generate_linear_gaussian(spec)
  else:
    dataset = _load_tfds(spec, tfds_data_dir, tfds_manual_dir)
  check(dataset)
  return dataset


def check_available(name, *, tfds_data_dir=None, tfds_manual_dir=None):
  """Fails at once if `load` could not have dataset `name` from a manual dir.

  For the checks before any work (no TFDS import): with a manual dir, a TFDS
  dataset must be prepared already (TFDS's layout,
  `<data dir>/<name>/<version>/dataset_info.json`) or have all its files
  there. Without one, whether it can be downloaded is left to `load`.

  Raises:
    DataError: a one-line message naming the dataset, the files and the flag.
  """
  spec = get_spec(name)
  if spec.name not in DATASETS or spec.name in _GENERATED or not tfds_manual_dir:
    return
  data_dir = pathlib.Path(tfds_data_dir or os.environ.get('TFDS_DATA_DIR')
                          or '~/tensorflow_datasets').expanduser()
  if not any(data_dir.glob(f'{spec.name}/*/dataset_info.json')):
    _check_manual_dir(spec, tfds_manual_dir)


def _check_manual_dir(spec, manual_root):
  manual_dir = pathlib.Path(manual_root) / spec.name
  missing = [f for f in spec.files if not (manual_dir / f).is_file()]
  if missing:
    raise DataError(
        f'dataset {spec.name}: --tfds_manual_dir={manual_root} needs the '
        f'folder {manual_dir} with {", ".join(spec.files)}; missing: '
        f'{", ".join(missing)}')


def generating_model(name='linear_gaussian'):
  """The fixed `LinearGaussian` model that generated dataset `name` is sampled from."""
  if name not in _GENERATED:
    raise DataError(f'{name!r} is not a generated dataset; those are: '
                    f'{", ".join(_GENERATED)}')
  latent_dim, correlation = _GENERATED[name]
  data_dim = int(np.prod(DATASETS[name].image_shape))
  return linear_gaussian.make_linear_gaussian(
      jax.random.key(20131220), data_dim, latent_dim,
      noise_std=_GENERATED_NOISE_STD, correlation=correlation)


def _generate_linear_gaussian(spec):
  """The generated dataset of `spec`, made once per process (read-only arrays)."""
  return _generated(spec, jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=None)
def _generated(spec, x64):
  del x64  # a key only: log p(x) has the dtype of the mode
  model = generating_model(spec.name)
  x = np.asarray(model.sample(jax.random.key(0), sum(spec.sizes)), np.float32)
  num_train, num_valid, _ = spec.sizes
  train, valid, test = np.split(x, [num_train, num_train + num_valid])
  log_marginal = np.asarray(jax.jit(jax.vmap(model.log_marginal))(test))
  shape = (-1, *spec.image_shape)
  arrays = [train.reshape(shape), valid.reshape(shape), test.reshape(shape),
            log_marginal]
  for a in arrays:  # shared by every load in the process
    a.flags.writeable = False
  return Dataset(spec, *arrays[:3], test_log_marginal=arrays[3])


_SPLITS = ('train', 'valid', 'test')


def _read_file(path):
  """The `Dataset` of a user's `.npz` file; `DataError` (one line) if unfit."""
  try:
    stat = os.stat(path)
  except OSError as e:
    raise DataError(f'dataset {path}: cannot read it ({e.strerror})') from None
  return _read_file_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_file_cached(path, mtime_ns, size):
  del mtime_ns, size  # Cache keys only: a rewritten file is read again.
  where = f'dataset {path}'
  if not zipfile.is_zipfile(path):
    raise DataError(f'{where}: not a .npz file (write one with np.savez(path, '
                    'train=..., valid=..., test=...))')
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [s for s in _SPLITS if s not in npz.files]
      if missing:
        raise DataError(f'{where}: needs the arrays train, valid and test '
                        f'(np.savez(path, train=..., valid=..., test=...)); '
                        f'it has: {", ".join(npz.files) or "none"}')
      arrays = {s: npz[s] for s in _SPLITS}
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Not a zip, a truncated one, pickled objects: whatever NumPy says.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(f'{where}: not a readable .npz file ({first_line})') from None
  shapes = {}
  for split, x in arrays.items():
    if x.ndim == 3:
      x = arrays[split] = x[..., None]
    if x.ndim != 4 or len(x) == 0 or 0 in x.shape:
      raise DataError(f'{where}, split {split}: expected examples [N>0, H, W] '
                      f'or [N>0, H, W, C], got shape {x.shape}')
    shapes[split] = x.shape[1:]
  if len(set(shapes.values())) > 1:
    raise DataError(f'{where}: the splits\' examples differ in shape: ' + ', '.join(
        f'{s} {shapes[s]}' for s in _SPLITS))
  pixels = _pixels_of(where, arrays)
  stored = {'binary': np.uint8, 'grey': np.uint8, 'real': np.float32}[pixels]
  spec = DatasetSpec(path, pixels, tuple(int(d) for d in shapes['train']),
                     tuple(len(arrays[s]) for s in _SPLITS))
  return Dataset(spec, *(arrays[s].astype(stored) for s in _SPLITS))


def _pixels_of(where, arrays):
  """'binary', 'grey' or 'real' for the values of all three splits."""
  kinds = {s: x.dtype.kind for s, x in arrays.items()}
  if any(k not in 'biuf' for k in kinds.values()):
    raise DataError(f'{where}: expected numbers, got dtypes ' + ', '.join(
        f'{s} {x.dtype}' for s, x in arrays.items()))
  floats = {k == 'f' for k in kinds.values()}
  if len(floats) > 1:
    raise DataError(f'{where}: the splits mix integer and float values (' + ', '.join(
        f'{s} {x.dtype}' for s, x in arrays.items()) + '); store all three alike')
  if all(np.isin(x, (0, 1)).all() for x in arrays.values()):
    return 'binary'
  if floats == {True}:
    for split, x in arrays.items():
      if not np.isfinite(x).all():
        raise DataError(f'{where}, split {split}: expected finite values, '
                        'found NaN or infinity')
    return 'real'
  for split, x in arrays.items():
    if x.min() < 0 or x.max() > 255:
      raise DataError(
          f'{where}, split {split}: integer values must be binary (0, 1) or '
          f'grey levels 0..255, found {x.min()}..{x.max()}; store real values '
          'as floats')
  return 'grey'


def check(dataset):
  """Validates shapes, dtypes and value ranges once, after loading."""
  spec = dataset.spec
  for split in ('train', 'valid', 'test'):
    x = getattr(dataset, split)
    where = f'dataset {spec.name}, split {split}'
    if x.ndim != 4 or x.shape[1:] != spec.image_shape or len(x) == 0:
      raise DataError(f'{where}: expected [N>0, {", ".join(map(str, spec.image_shape))}] '
                      f'examples, got shape {x.shape}')
    if spec.pixels == 'real':
      if x.dtype != np.float32 or not np.all(np.isfinite(x)):
        raise DataError(f'{where}: expected finite float32 values')
      continue
    if x.dtype != np.uint8:
      raise DataError(f'{where}: expected uint8 pixels, got {x.dtype}')
    if spec.pixels == 'binary' and x.max() > 1:
      raise DataError(f'{where}: expected binary pixels in {{0, 1}}, '
                      f'found the value {x.max()}')


def _without_opencv_notice(record):
  """False for TFDS's notice that it decodes images with PIL, not OpenCV.

  Every read of an image dataset printed it on stderr; PIL is what vaejax
  uses, on purpose (OpenCV would be one more large dependency).
  """
  return 'OpenCV is not installed' not in record.getMessage()


def _load_tfds(spec, data_dir, manual_root):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  absl_logger = logging.getLogger('absl')
  if _without_opencv_notice not in absl_logger.filters:
    absl_logger.addFilter(_without_opencv_notice)

  builder = tfds.builder(spec.name, data_dir=data_dir)
  if not builder.is_prepared():
    _prepare(builder, spec, manual_root)
  splits = [s for s in spec.tfds_splits if s is not None]
  cache = pathlib.Path(builder.data_dir) / SPLITS_CACHE
  arrays = _read_splits_cache(cache, splits)
  if arrays is None:
    arrays = {s: _read_split(tfds, spec.name, s, builder.data_dir) for s in splits}
    _write_splits_cache(cache, arrays)
  train_split, valid_split, test_split = spec.tfds_splits
  train, test = arrays[train_split], arrays[test_split]
  if valid_split is None:
    train, valid = train[:spec.sizes[0]], train[spec.sizes[0]:]
  else:
    valid = arrays[valid_split]
  dataset = Dataset(spec, train, valid, test)
  sizes = tuple(len(x) for x in (train, valid, test))
  if sizes != spec.sizes:
    raise DataError(f'dataset {spec.name}: expected {spec.sizes} examples in '
                    f'train, validation and test, read {sizes}')
  return dataset


# Beside a prepared TFDS dataset (in its version folder), its splits as one
# NumPy file: TFDS decodes its records one example at a time (seconds for
# MNIST's 70,000 images, every run); this file reads in a fraction of a
# second. Written once, atomically; where it cannot be written (a read-only
# data dir) or read, the records are read as before.
SPLITS_CACHE = 'vaejax_splits.npz'


def _read_splits_cache(path, splits):
  """{split: images} from `path`, or None if it is missing, damaged or partial."""
  try:
    with np.load(path, allow_pickle=False) as saved:
      if set(saved.files) != set(splits):
        return None
      return {s: saved[s] for s in splits}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
    return None


def _write_splits_cache(path, arrays):
  try:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix='.vaejax_splits',
                                     suffix='.npz', delete=False) as f:
      np.savez(f, **arrays)
    os.chmod(f.name, 0o644)  # as the data dir's other files, not 0600
    os.replace(f.name, path)
  except OSError:
    with contextlib.suppress(OSError, NameError):
      os.unlink(f.name)


def _read_split(tfds, name, split, prepared_dir):
  # The version folder's parent's parent is the data dir TFDS was given.
  data_dir = pathlib.Path(prepared_dir).parent.parent
  source = tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False)
  examples = source.__getitems__(range(len(source)))
  return np.stack([example['image'] for example in examples])


def _prepare(builder, spec, manual_root):
  """Prepares `builder` from the manual dir, or by download if there is none."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  files = ', '.join(spec.files)
  if manual_root:
    _check_manual_dir(spec, manual_root)
    manual_dir = pathlib.Path(manual_root) / spec.name
  else:
    manual_dir = None
    try:
      urllib.request.urlopen(
          urllib.request.Request(spec.url, method='HEAD'), timeout=10).close()
    except (urllib.error.URLError, OSError) as e:
      reason = getattr(e, 'reason', e)
      raise DataError(
          f'dataset {spec.name} is not prepared in {builder.data_dir} and '
          f'cannot be downloaded ({reason}): pass --tfds_manual_dir=ROOT with '
          f'ROOT/{spec.name}/ holding {files}') from None
  if importlib.util.find_spec('tensorflow') is None:
    raise DataError(
        f'preparing dataset {spec.name} needs TensorFlow, which is not '
        f"installed: pip install 'vaejax[data]' (or tensorflow-cpu)")
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(
          manual_dir=None if manual_dir is None else str(manual_dir)))
