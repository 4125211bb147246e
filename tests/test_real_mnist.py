"""vaejax.data on real MNIST: Burda et al.'s held-out split.

Its own module, so that one test process prepares mnist while another
prepares binarized_mnist (test_data.py).
"""

import gzip

import numpy as np
import pytest

from vaejax import data


@pytest.mark.real_data
def test_real_mnist_holds_out_the_last_training_images(mnist_tfds_dirs):
  data_dir, manual_root = mnist_tfds_dirs
  dataset = data.load('mnist', tfds_data_dir=data_dir, tfds_manual_dir=manual_root)
  assert [len(x) for x in (dataset.train, dataset.valid, dataset.test)] == [
      50_000, 10_000, 10_000]
  assert dataset.train.dtype == np.uint8 and dataset.train.max() == 255
  # No image is in both the training and the validation split.
  train_hashes = {x.tobytes() for x in dataset.train}
  assert sum(x.tobytes() in train_hashes for x in dataset.valid) < 10
  # Burda et al.'s split: the last 400 held out, the first 59,600 trained on.
  burda = data.load('mnist', tfds_data_dir=data_dir, tfds_manual_dir=manual_root,
                    num_validation=400)
  assert [len(x) for x in (burda.train, burda.valid, burda.test)] == [
      59_600, 400, 10_000]
  np.testing.assert_array_equal(burda.train[:50_000], dataset.train)
  np.testing.assert_array_equal(burda.train[50_000:], dataset.valid[:9_600])
  np.testing.assert_array_equal(burda.valid, dataset.valid[9_600:])
  np.testing.assert_array_equal(burda.test, dataset.test)


def read_idx(path, header_bytes):
  """The bytes after the header of an MNIST idx file (images or labels)."""
  with gzip.open(path) as f:
    return np.frombuffer(f.read(), np.uint8)[header_bytes:]


@pytest.mark.real_data
def test_real_mnist_labels_are_those_of_the_raw_files(mnist_tfds_dirs):
  data_dir, manual_root = mnist_tfds_dirs
  dataset = data.load('mnist', tfds_data_dir=data_dir, tfds_manual_dir=manual_root,
                      num_validation=400)
  train_labels, valid_labels, test_labels = dataset.labels
  assert [len(y) for y in dataset.labels] == [59_600, 400, 10_000]
  # Each test image has the label the raw files give it (TFDS reorders the
  # examples; an image is looked up by its bytes, in the raw test set).
  raw = manual_root / 'mnist'
  images = read_idx(raw / 't10k-images-idx3-ubyte.gz', 16).reshape(-1, 784)
  labels = read_idx(raw / 't10k-labels-idx1-ubyte.gz', 8)
  label_of = {x.tobytes(): y for x, y in zip(images, labels)}
  got = [label_of[x.tobytes()] for x in dataset.test.reshape(-1, 784)]
  np.testing.assert_array_equal(got, test_labels)
  # The held-out validation images keep their labels (cut where the images are).
  raw_train = read_idx(raw / 'train-images-idx3-ubyte.gz', 16).reshape(-1, 784)
  raw_labels = read_idx(raw / 'train-labels-idx1-ubyte.gz', 8)
  label_of = {x.tobytes(): y for x, y in zip(raw_train, raw_labels)}
  for x, y in zip(dataset.valid.reshape(-1, 784), valid_labels):
    assert label_of[x.tobytes()] == y
  assert np.array_equal(np.bincount(train_labels, minlength=10)
                        + np.bincount(valid_labels, minlength=10),
                        np.bincount(raw_labels, minlength=10))
