"""vaejax.data on real MNIST: Burda et al.'s held-out split.

Its own module, so that one test process prepares mnist while another
prepares binarized_mnist (test_data.py).
"""

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
