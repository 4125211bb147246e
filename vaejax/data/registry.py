"""The named datasets, what is known of a dataset before loading, and its checks."""

import dataclasses
import os

import numpy as np

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
    'frey_face': DatasetSpec(
        'frey_face', 'grey', (28, 20, 1), (1565, 200, 200),
        files=('frey_face.npz',),
        url='https://cs.nyu.edu/~roweis/data/frey_rawface.mat',
        tfds_splits=('train', 'valid', 'test')),
    'linear_gaussian': DatasetSpec(
        'linear_gaussian', 'real', (8, 8, 1), (2000, 500, 500)),
    'linear_gaussian_correlated': DatasetSpec(
        'linear_gaussian_correlated', 'real', (8, 8, 1), (2000, 500, 500)),
}

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
    labels: (train, valid, test) `[N]` integer labels of the examples, where
      the dataset has them (mnist, fashion_mnist, a file with
      `train_labels`, ...); else None.
  """
  spec: DatasetSpec
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  test_log_marginal: np.ndarray | None = None
  labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def is_file(name):
  """Whether `name` is a user's `.npz` file rather than a named dataset."""
  return name.endswith('.npz')


def default_manual_dir():
  """The manual-dir root from $VAEJAX_TFDS_MANUAL_DIR, or None."""
  return os.environ.get(MANUAL_DIR_ENV) or None


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
