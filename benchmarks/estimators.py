r"""The training epoch with each gradient estimator and bound, beside the standard IWAE.

  python -m benchmarks.estimators --tfds_manual_dir=../shared/data

Burda et al.'s one-layer MNIST model (burda_table1.flags: 784-200-200-50,
tanh) on the first --num_train binarized MNIST training images, batch
--batch_size, one compiled epoch (vaejax.step) at a time, K = --num_samples:

  iwae             the standard reparameterised gradient of L_K
  iwae stl         sticking the landing (vaejax.estimators)
  iwae dreg        doubly reparameterised
  miwae, piwae     M = --num_groups groups of K / M draws (the same M * K = K
                   decoder passes per example), ciwae at beta = 0.05

They alternate epoch by epoch for --repeats rounds after a warm-up epoch
each; the script prints the median seconds per epoch and each one's ratio
to the standard IWAE epoch.
"""

import dataclasses

from absl import app
from absl import flags

from benchmarks import common

common.define_data_flags()
flags.DEFINE_integer('repeats', 3, 'Timed epochs per estimator.')
flags.DEFINE_integer('batch_size', 100, 'Examples per step.')
flags.DEFINE_integer('num_samples', 50, 'K, draws per example.')
flags.DEFINE_integer('num_groups', 5, 'M of miwae and piwae (K / M draws each).')
flags.DEFINE_integer('num_train', 10_000, 'Training images an epoch runs over.')
FLAGS = flags.FLAGS

BURDA = dict(hidden_dims=(200, 200), latent_dim=50, activation='tanh',
             kernel_init='glorot_uniform', adam_eps=1e-4)


def main(argv):
  del argv
  dataset = common.setup()
  dataset = dataclasses.replace(dataset, train=dataset.train[:FLAGS.num_train])
  k, m = FLAGS.num_samples, FLAGS.num_groups
  variants = {
      'iwae': dict(objective='iwae', num_samples=k),
      'iwae stl': dict(objective='iwae', num_samples=k, gradient_estimator='stl'),
      'iwae dreg': dict(objective='iwae', num_samples=k, gradient_estimator='dreg'),
      f'miwae M={m}': dict(objective='miwae', num_groups=m, num_samples=k // m),
      f'piwae M={m}': dict(objective='piwae', num_groups=m, num_samples=k // m),
      'ciwae beta=0.05': dict(objective='ciwae', num_samples=k, ciwae_beta=0.05),
  }
  configs = {name: common.flax_example_config(batch_size=FLAGS.batch_size,
                                              **BURDA, **flags_)
             for name, flags_ in variants.items()}
  common.compare_epochs(
      dataset, configs, FLAGS.repeats,
      f'K={k}, batch {FLAGS.batch_size}, {FLAGS.num_train:,} images an epoch')


if __name__ == '__main__':
  app.run(main)
