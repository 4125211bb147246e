"""Frey Face: the manual dir's file, and the download path on a generated .mat."""

import hashlib
import pathlib

import numpy as np
import pytest
import scipy.io

from vaejax import config as config_lib
from vaejax import data
from vaejax import sweep
from vaejax import train
from vaejax.data import frey_face
import conftest  # pylint: disable=g-bad-import-order


def config(workdir, **overrides):
  return config_lib.TrainConfig(**{
      'workdir': str(workdir), 'dataset': 'frey_face', 'hidden_dims': (32,),
      'likelihood': 'gaussian_sigmoid', 'latent_dim': 2, 'batch_size': 100,
      'num_epochs': 1, 'eval_iwae_samples': 5, 'progress': False, **overrides})


@pytest.fixture
def served(tmp_path, monkeypatch):
  """A generated frey_rawface.mat at a file:// URL, its frames' digest set."""
  frames = np.random.default_rng(1).integers(0, 256, (1965, 560), np.uint8)
  path = tmp_path / 'frey_rawface.mat'
  scipy.io.savemat(path, {'ff': frames.T})
  monkeypatch.setattr(frey_face, 'URL', path.as_uri())
  monkeypatch.setattr(frey_face, 'FRAMES_SHA256',
                      hashlib.sha256(frames.tobytes()).hexdigest())
  return frames, path


def test_a_downloaded_mat_is_converted_split_and_cached(served, tmp_path,
                                                       monkeypatch):
  frames, path = served
  data_dir = tmp_path / 'tfds'
  dataset = data.load('frey_face', tfds_data_dir=data_dir)
  perm = np.random.default_rng(0).permutation(1965)
  images = frames.reshape(1965, 28, 20, 1)
  np.testing.assert_array_equal(dataset.train, images[perm[:1565]])
  np.testing.assert_array_equal(dataset.valid, images[perm[1565:1765]])
  np.testing.assert_array_equal(dataset.test, images[perm[1765:]])
  assert (data_dir / 'frey_face' / 'frey_face.npz').is_file()
  # Cached: read again with no source at all.
  monkeypatch.setattr(frey_face, 'URL', (tmp_path / 'gone.mat').as_uri())
  again = data.load('frey_face', tfds_data_dir=data_dir)
  np.testing.assert_array_equal(again.test, dataset.test)
  # One epoch trains on it, and a sweep summarizes one row per latent size
  # (z = 2 with its manifold over the prior's quantiles).
  base = config(tmp_path / 'sweep', tfds_data_dir=str(data_dir))
  rows = sweep.run(base, sweep.SweepFlags(latent_dims=(2, 3), seeds=(0,)),
                   log=lambda *_: None)
  assert [r['latent_dim'] for r in rows] == [2, 3]
  assert all(np.isfinite(r['test_elbo']) for r in rows)
  assert (tmp_path / 'sweep' / 'latent002_seed0' / 'manifold.png').is_file()


def test_a_wrong_missing_or_truncated_source_is_refused_in_one_line(
    served, tmp_path, monkeypatch):
  _, path = served
  cases = []
  monkeypatch.setattr(frey_face, 'FRAMES_SHA256', '0' * 64)
  cases.append('not the Frey Face data')
  for message in cases:
    with pytest.raises(data.DataError, match=message) as caught:
      data.load('frey_face', tfds_data_dir=tmp_path / 'a')
    assert '\n' not in str(caught.value)
  monkeypatch.setattr(frey_face, 'URL', (tmp_path / 'gone.mat').as_uri())
  with pytest.raises(data.DataError, match='cannot be downloaded') as caught:
    data.load('frey_face', tfds_data_dir=tmp_path / 'b')
  assert '\n' not in str(caught.value)
  truncated = tmp_path / 'truncated.mat'
  truncated.write_bytes(path.read_bytes()[:5000])
  monkeypatch.setattr(frey_face, 'URL', truncated.as_uri())
  with pytest.raises(data.DataError, match='is not a readable frey_rawface.mat') as caught:
    data.load('frey_face', tfds_data_dir=tmp_path / 'c')
  assert '\n' not in str(caught.value)
  assert not (tmp_path / 'c' / 'frey_face' / 'frey_face.npz').exists()
  # A manual dir without the file: refused before any work.
  with pytest.raises(data.DataError, match='missing: frey_face.npz'):
    data.check_available('frey_face', tfds_data_dir=tmp_path / 'd',
                         tfds_manual_dir=tmp_path / 'empty')


@pytest.mark.real_data
def test_the_real_frames_train_one_epoch(tmp_path):
  root = conftest.manual_dir_root()
  if not (root / 'frey_face' / 'frey_face.npz').is_file():
    pytest.skip('no frey_face/frey_face.npz in the manual dir')
  dataset = data.load('frey_face', tfds_manual_dir=root)
  assert [len(x) for x in (dataset.train, dataset.valid, dataset.test)] == [
      1565, 200, 200]
  assert dataset.train.dtype == np.uint8 and dataset.train.shape[1:] == (28, 20, 1)
  # The manual file is the frames of frey_rawface.mat, by their digest.
  perm = np.random.default_rng(0).permutation(1965)
  frames = np.empty((1965, 560), np.uint8)
  frames[perm] = np.concatenate(
      [dataset.train, dataset.valid, dataset.test]).reshape(1965, 560)
  assert hashlib.sha256(frames.tobytes()).hexdigest() == frey_face.FRAMES_SHA256
  results = train.train_and_evaluate(config(tmp_path, tfds_manual_dir=str(root)))
  # A density of continuous values: the log-likelihood may exceed 0.
  assert np.isfinite(results['test_elbo']) and np.isfinite(results['test_nll_iwae'])
