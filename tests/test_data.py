"""vaejax.data: the generated dataset, checks, clear failures, and real MNIST."""

import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from vaejax import data

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_linear_gaussian_is_fixed_and_its_log_marginal_is_the_models():
  first = data.load('linear_gaussian')
  data.generated._generated.cache_clear()  # pylint: disable=protected-access
  again = data.load('linear_gaussian')  # generated afresh
  spec = first.spec
  for split, size in zip(('train', 'valid', 'test'), spec.sizes):
    x = getattr(first, split)
    assert x.shape == (size, *spec.image_shape) and x.dtype == np.float32
    assert getattr(again, split) is not x
    np.testing.assert_array_equal(x, getattr(again, split))
    # Shared by every load in the process: no caller can change the next's.
    with pytest.raises(ValueError, match='read-only'):
      x[0] = 0
  model = data.generating_model()
  flat = first.test.reshape(len(first.test), -1)
  np.testing.assert_allclose(first.test_log_marginal,
                             jax.vmap(model.log_marginal)(flat), rtol=1e-6)
  # Samples of the model: their mean log-density is minus the Gaussian's
  # entropy, D/2 (1 + log 2 pi) + 1/2 log det S, up to sampling error.
  cov = np.asarray(model.weight, np.float64) @ np.asarray(model.weight).T
  cov += np.exp(float(model.log_var)) * np.eye(len(cov))
  entropy = 0.5 * len(cov) * (1 + np.log(2 * np.pi)) + 0.5 * np.linalg.slogdet(cov)[1]
  # Var[log p(x)] = D / 2 for a Gaussian: 5 standard errors.
  assert abs(-first.test_log_marginal.mean() - entropy) < 5 * np.sqrt(
      len(cov) / 2 / len(flat))


def test_unknown_dataset_names_the_known_ones():
  with pytest.raises(data.DataError, match='unknown dataset .*binarized_mnist'):
    data.load('cifar100')


@pytest.mark.parametrize('split, array, message', [
    ('train', np.zeros((5, 28, 28), np.uint8), 'shape'),
    ('valid', np.zeros((5, 28, 28, 1), np.float32), 'uint8'),
    ('test', np.full((5, 28, 28, 1), 7, np.uint8), 'binary'),
])
def test_check_rejects_wrong_shape_dtype_and_range(split, array, message):
  good = np.zeros((5, 28, 28, 1), np.uint8)
  splits = dict(train=good, valid=good, test=good)
  splits[split] = array
  dataset = data.Dataset(data.get_spec('binarized_mnist'), **splits)
  with pytest.raises(data.DataError, match=f'split {split}.*{message}'):
    data.check(dataset)


def test_missing_manual_files_fail_at_once_naming_files_and_flag(tmp_path):
  (tmp_path / 'manual' / 'binarized_mnist').mkdir(parents=True)
  (tmp_path / 'manual' / 'binarized_mnist' / 'binarized_mnist_train.amat').touch()
  start = time.perf_counter()
  with pytest.raises(data.DataError) as error:
    data.load('binarized_mnist', tfds_data_dir=tmp_path / 'tfds',
              tfds_manual_dir=tmp_path / 'manual')
  assert time.perf_counter() - start < 5
  message = str(error.value)
  assert '\n' not in message
  for part in ('binarized_mnist', '--tfds_manual_dir', 'binarized_mnist_valid.amat',
               'binarized_mnist_test.amat'):
    assert part in message


def test_no_network_and_no_files_fail_at_once(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise urllib.error.URLError('Name or service not known')

  monkeypatch.setattr(urllib.request, 'urlopen', no_network)
  with pytest.raises(data.DataError) as error:
    data.load('mnist', tfds_data_dir=tmp_path)
  message = str(error.value)
  assert '\n' not in message
  for part in ('mnist', 'cannot be downloaded', '--tfds_manual_dir',
               'train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'):
    assert part in message


def read_amat(path, num_rows):
  """The first rows of a Larochelle .amat file: 784 space-separated 0/1 per line."""
  with open(path) as f:
    return np.array([[int(v) for v in next(f).split()] for _ in range(num_rows)],
                    np.uint8)


@pytest.mark.real_data
def test_real_binarized_mnist(tmp_path, tfds_dirs):
  data_dir, manual_root = tfds_dirs
  dataset = data.load('binarized_mnist', tfds_data_dir=data_dir,
                      tfds_manual_dir=manual_root)
  assert [len(x) for x in (dataset.train, dataset.valid, dataset.test)] == [
      50_000, 10_000, 10_000]
  assert dataset.train.dtype == np.uint8 and dataset.train.max() == 1
  # The same images as the raw files, read without TFDS (which reorders them).
  for split in ('train', 'valid', 'test'):
    images = {x.tobytes() for x in getattr(dataset, split).reshape(-1, 784)}
    raw = read_amat(manual_root / 'binarized_mnist' / f'binarized_mnist_{split}.amat', 5)
    assert all(row.tobytes() in images for row in raw), split
  # Mean pixel intensity of binarized MNIST is about 0.13.
  assert 0.1 < dataset.train.mean() < 0.16
  # The splits' cache beside the prepared dataset gives the same arrays; a
  # damaged one is read around and written again (in a copy: the data dir is
  # shared by runs).
  data_dir = tmp_path / 'tensorflow_datasets'
  shutil.copytree(tfds_dirs[0] / 'binarized_mnist', data_dir / 'binarized_mnist')
  (cache,) = data_dir.glob(f'binarized_mnist/*/{data.SPLITS_CACHE}')
  cache.write_bytes(cache.read_bytes()[:1000])
  again = data.load('binarized_mnist', tfds_data_dir=data_dir,
                    tfds_manual_dir=manual_root)
  cached = data.load('binarized_mnist', tfds_data_dir=data_dir,
                     tfds_manual_dir=manual_root)
  for split in ('train', 'valid', 'test'):
    np.testing.assert_array_equal(getattr(again, split), getattr(dataset, split))
    np.testing.assert_array_equal(getattr(cached, split), getattr(dataset, split))
  assert cache.stat().st_size > 50_000 * 784
  assert dataset.labels is None and again.labels is None  # it has none


@pytest.mark.real_data
def test_binary_trains_on_real_binarized_mnist(tmp_path, tfds_dirs):
  data_dir, manual_root = tfds_dirs
  # Here, beside the other real-data tests, so that one test process
  # prepares the dataset and uses it.
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.train',
       '--flagfile=experiments/flags/flax_example.flags', f'--workdir={tmp_path}',
       f'--tfds_data_dir={data_dir}', f'--tfds_manual_dir={manual_root}',
       '--num_epochs=1', '--eval_iwae_samples=5'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'OpenCV' not in result.stderr  # TFDS's notice is silenced
  results = json.loads((tmp_path / 'results.json').read_text())
  # One epoch of the Flax example's model: a test ELBO of about -120 nats.
  assert -135 < results['test_elbo'] < -110
  assert results['test_nll_iwae'] < -results['test_elbo']


# --- A user's own arrays in a .npz file. ---

RNG = np.random.default_rng(0)


def splits_of(make):
  return {'train': make(30), 'valid': make(5), 'test': make(4)}


@pytest.mark.parametrize('make, pixels, stored', [
    (lambda n: RNG.integers(0, 256, (n, 6, 4), np.uint8), 'grey', None),
    (lambda n: RNG.integers(0, 256, (n, 6, 4, 3), np.int64), 'grey', np.uint8),
    (lambda n: RNG.random((n, 6, 4)) < 0.5, 'binary', np.uint8),
    (lambda n: (RNG.random((n, 6, 4, 1)) < 0.5).astype(np.float64), 'binary',
     np.uint8),
    (lambda n: RNG.normal(size=(n, 6, 4, 2)), 'real', np.float32),
])
def test_a_npz_file_is_read_as_its_arrays(tmp_path, make, pixels, stored):
  arrays = splits_of(make)
  path = str(tmp_path / 'mine.npz')
  np.savez(path, **arrays)
  dataset = data.load(path)
  assert dataset.spec == data.get_spec(path)
  assert (dataset.spec.pixels, dataset.spec.sizes) == (pixels, (30, 5, 4))
  for split, x in arrays.items():
    expected = x if x.ndim == 4 else x[..., None]
    got = getattr(dataset, split)
    assert got.dtype == (stored or x.dtype) and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected.astype(got.dtype))
  assert dataset.spec.image_shape == expected.shape[1:]


@pytest.mark.parametrize('arrays, message', [
    (dict(train=np.zeros((3, 4, 4)), valid=np.zeros((3, 4, 4))),
     'needs the arrays train, valid and test.*it has: train, valid'),
    (dict(train=np.zeros((3, 16)), valid=np.zeros((3, 16)), test=np.zeros((3, 16))),
     r'split train: expected examples \[N>0, H, W\]'),
    (dict(train=np.zeros((3, 4, 4)), valid=np.zeros((0, 4, 4)), test=np.zeros((3, 4, 4))),
     'split valid: expected examples'),
    (dict(train=np.zeros((3, 4, 4)), valid=np.zeros((3, 4, 5)), test=np.zeros((3, 4, 4))),
     r'differ in shape: train \(4, 4, 1\), valid \(4, 5, 1\)'),
    (dict(train=np.full((3, 4, 4), 2, np.uint8), valid=np.zeros((3, 4, 4)),
          test=np.zeros((3, 4, 4), np.uint8)), 'mix integer and float'),
    (dict(train=np.arange(48).reshape(3, 4, 4) * 7, valid=np.zeros((3, 4, 4), int),
          test=np.zeros((3, 4, 4), int)), r'split train: integer values .* 0\.\.329'),
    (dict(train=np.full((3, 4, 4), 0.5), valid=np.zeros((3, 4, 4)),
          test=np.full((3, 4, 4), np.nan)), 'split test: expected finite'),
    (dict(train=np.full((2, 3, 3), 'a'), valid=np.zeros((2, 3, 3)), test=np.zeros((2, 3, 3))),
     'expected numbers'),
])
def test_a_npz_file_unfit_to_train_on_says_why(tmp_path, arrays, message):
  path = str(tmp_path / 'mine.npz')
  np.savez(path, **arrays)
  with pytest.raises(data.DataError, match=f'dataset {path}.*{message}'):
    data.get_spec(path)


def test_a_npz_files_labels_are_read_and_checked(tmp_path):
  arrays = splits_of(lambda n: RNG.random((n, 6, 4)) < 0.5)
  labels = {f'{s}_labels': RNG.integers(0, 5, len(x)) for s, x in arrays.items()}
  path = str(tmp_path / 'mine.npz')
  np.savez(path, **arrays, **labels)
  dataset = data.load(path)
  for got, split in zip(dataset.labels, ('train', 'valid', 'test')):
    np.testing.assert_array_equal(got, labels[f'{split}_labels'])
  np.savez(path, **arrays)
  assert data.load(path).labels is None
  for given, message in [
      ({'train_labels': labels['train_labels']},
       'has train_labels but not valid_labels, test_labels'),
      ({**labels, 'valid_labels': labels['valid_labels'][:3]},
       r'valid_labels must be \[5\] integers .* got int64 \(3,\)'),
      ({**labels, 'test_labels': labels['test_labels'] * 0.5},
       r'test_labels must be \[4\] integers'),
  ]:
    np.savez(path, **arrays, **given)
    with pytest.raises(data.DataError, match=message):
      data.load(path)


def test_a_missing_or_foreign_npz_file_says_so(tmp_path):
  with pytest.raises(data.DataError, match='cannot read it'):
    data.get_spec(str(tmp_path / 'none.npz'))
  path = tmp_path / 'text.npz'
  path.write_text('not an archive')
  with pytest.raises(data.DataError, match='not a .npz file'):
    data.get_spec(str(path))


def test_a_rewritten_npz_file_is_read_again(tmp_path):
  path = str(tmp_path / 'mine.npz')
  np.savez(path, **splits_of(lambda n: np.zeros((n, 2, 2), np.uint8)))
  assert data.get_spec(path).pixels == 'binary'
  np.savez(path, **splits_of(lambda n: np.full((n, 2, 2), 0.5)))
  assert data.get_spec(path).pixels == 'real'
