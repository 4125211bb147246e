"""The random streams of a run, each derived from its seed with its own tag.

Every stream is `fold_in(key(seed), TAG)` with a tag of its own, so no two
streams share a key whatever the seeds: `--seed` equal to `--data_seed` (the
default) gives the initialisation and the data order different keys, and the
fixed key that binarizes evaluation sets is no run's key for any seed.
Within a stream, draws are derived by `fold_in` of the epoch, the step or the
example index, so a resumed run draws the numbers of an uninterrupted one.

  streams of --seed:       init (parameters), train (the objective's draws,
                           per step), valid, test (per-epoch ELBO draws),
                           iwae (the final importance-weighted bound),
                           samples (the images' prior draws)
  streams of --data_seed:  shuffle (the data order, per epoch), binarize
                           (dynamic binarization, per step); a sweep's
                           members share them
  fixed:                   evaluation binarization, per split
"""

import dataclasses

import jax

# One tag per stream; `fold_in(key(seed), tag)` is the stream's key.
INIT = 1
TRAIN = 2
VALID = 3
TEST = 4
IWAE = 5
SAMPLES = 6
SHUFFLE = 7
BINARIZE = 8
EVAL_BINARIZE = 9

# The seed of the evaluation binarization: evaluation sets of grey-level data
# under dynamic binarization are binarized once, with a key fixed for every
# run; its tag differs from every seeded stream's.
_EVAL_BINARIZE_SEED = 0


def stream(seed, tag):
  """The key of stream `tag` of `seed`."""
  return jax.random.fold_in(jax.random.key(seed), tag)


def eval_binarize_key(split_index):
  """The fixed key that binarizes evaluation split `split_index` (0 valid, 1
  test, 2 the training examples that active units are counted over)."""
  return jax.random.fold_in(stream(_EVAL_BINARIZE_SEED, EVAL_BINARIZE),
                            split_index)


@dataclasses.dataclass(frozen=True)
class RunKeys:
  """Every stream of a run: from `seed`, but shuffle and binarize from `data_seed`."""
  init: jax.Array
  train: jax.Array
  valid: jax.Array
  test: jax.Array
  iwae: jax.Array
  samples: jax.Array
  shuffle: jax.Array
  binarize: jax.Array

  @classmethod
  def of(cls, config):
    """The keys of `config`'s `seed` and `data_seed`."""
    seeded = {name: stream(config.seed, tag) for name, tag in (
        ('init', INIT), ('train', TRAIN), ('valid', VALID), ('test', TEST),
        ('iwae', IWAE), ('samples', SAMPLES))}
    return cls(**seeded, shuffle=stream(config.data_seed, SHUFFLE),
               binarize=stream(config.data_seed, BINARIZE))

  @property
  def data(self):
    """The data streams as one pytree, as the compiled epoch takes them."""
    return {'shuffle': self.shuffle, 'binarize': self.binarize}
