"""vaejax.rng: every stream of a run has its own key, whatever the seeds."""

import itertools

import jax
import numpy as np
import pytest

from vaejax import config as config_lib
from vaejax import rng


def keys_of(seed, data_seed):
  config = config_lib.TrainConfig(workdir='unused', seed=seed, data_seed=data_seed)
  return rng.RunKeys.of(config)


def key_bytes(key):
  return np.asarray(jax.random.key_data(key)).tobytes()


@pytest.mark.parametrize('seed', [0, 1, 1234])
def test_streams_are_pairwise_distinct_for_equal_seeds(seed):
  keys = keys_of(seed, seed)
  streams = {name: getattr(keys, name)
             for name in ('init', 'train', 'valid', 'test', 'iwae', 'samples',
                          'shuffle', 'binarize')}
  streams.update(eval_binarize_valid=rng.eval_binarize_key(0),
                 eval_binarize_test=rng.eval_binarize_key(1))
  # What the epoch and the evaluation derive from them, at the first indices.
  for name, index in itertools.product(('train', 'shuffle', 'binarize', 'valid',
                                        'test', 'iwae'), range(3)):
    streams[f'{name}[{index}]'] = jax.random.fold_in(streams[name], index)
  seen = {}
  for name, key in streams.items():
    assert key_bytes(key) not in seen, (name, seen.get(key_bytes(key)))
    seen[key_bytes(key)] = name


def test_data_streams_follow_the_data_seed_alone():
  a, b, c = keys_of(0, 7), keys_of(5, 7), keys_of(0, 8)
  for name in ('shuffle', 'binarize'):
    assert key_bytes(getattr(a, name)) == key_bytes(getattr(b, name))
    assert key_bytes(getattr(a, name)) != key_bytes(getattr(c, name))
  for name in ('init', 'train', 'iwae'):
    assert key_bytes(getattr(a, name)) == key_bytes(getattr(c, name))
    assert key_bytes(getattr(a, name)) != key_bytes(getattr(b, name))

