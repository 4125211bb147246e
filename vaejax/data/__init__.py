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

The package: `registry` (the named datasets, `DatasetSpec`, `Dataset`, the
checks), `tfds_data` (preparing and reading TFDS datasets), `user_files`
(`.npz` files), `generated` (the linear-Gaussian datasets), `inputs`
(stored examples -> model inputs); `load` and `get_spec` here.
"""

import dataclasses
import os
import pathlib

from vaejax import checks
from vaejax.data import frey_face
from vaejax.data import generated
from vaejax.data import tfds_data
from vaejax.data import user_files
from vaejax.data.generated import generating_model
from vaejax.data.inputs import eval_inputs
from vaejax.data.inputs import input_mean
from vaejax.data.inputs import to_inputs
from vaejax.data.registry import DATASETS
from vaejax.data.registry import MANUAL_DIR_ENV
from vaejax.data.registry import DataError
from vaejax.data.registry import Dataset
from vaejax.data.registry import DatasetSpec
from vaejax.data.registry import check
from vaejax.data.registry import default_manual_dir
from vaejax.data.registry import is_file
from vaejax.data.tfds_data import SPLITS_CACHE

__all__ = ('DATASETS', 'MANUAL_DIR_ENV', 'SPLITS_CACHE', 'DataError', 'Dataset',
           'DatasetSpec', 'check', 'check_available', 'default_manual_dir',
           'eval_inputs', 'generating_model', 'get_spec', 'input_mean',
           'is_file', 'load', 'to_inputs')


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
    spec = user_files.read_file(name).spec
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
    dataset = user_files.read_file(name)
  elif spec.name in generated.GENERATED:
    dataset = generated.generate(spec)
  elif spec.name == frey_face.NAME:
    dataset = frey_face.load(spec, tfds_data_dir, tfds_manual_dir)
  else:
    dataset = tfds_data.load(spec, tfds_data_dir, tfds_manual_dir)
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
  if spec.name not in DATASETS or spec.name in generated.GENERATED or not tfds_manual_dir:
    return
  data_dir = pathlib.Path(tfds_data_dir or os.environ.get('TFDS_DATA_DIR')
                          or '~/tensorflow_datasets').expanduser()
  prepared = (data_dir / spec.name / frey_face.FILE).is_file() if (
      spec.name == frey_face.NAME) else any(
          data_dir.glob(f'{spec.name}/*/dataset_info.json'))
  if not prepared:
    tfds_data.check_manual_dir(spec, tfds_manual_dir)


def check_config(c, spec):
  """The data fields of a `TrainConfig` `c` against the dataset's `spec`;
  raises `checks.ConfigError` in one line."""
  if c.batch_size > spec.sizes[0]:
    raise checks.ConfigError(f'--batch_size={c.batch_size} is larger than the '
                             f'{spec.sizes[0]} training examples of {spec.name}')
  if c.dynamic_binarization and spec.pixels != 'grey':
    raise checks.ConfigError(f'--dynamic_binarization needs grey-level data; '
                             f'{spec.name} has {spec.pixels} values')
  if c.likelihood == 'bernoulli' and spec.pixels == 'grey' and not c.dynamic_binarization:
    raise checks.ConfigError(f'--likelihood=bernoulli needs binary pixels: '
                             f'{spec.name} has grey levels; add '
                             '--dynamic_binarization or use --likelihood=gaussian')
  if c.likelihood == 'bernoulli' and spec.pixels == 'real':
    raise checks.ConfigError(f'--likelihood=bernoulli needs binary pixels: '
                             f'{spec.name} has real values; use '
                             '--likelihood=gaussian')
