r"""The training epoch of a two-layer VAE beside the one-layer one.

  python -m benchmarks.two_layer --tfds_manual_dir=../shared/data

Burda et al.'s (2015) MNIST models, as the presets burda_table1.flags and
burda_table1_two_layer.flags have them (tanh, Glorot, Adam 1e-3, eps 1e-4),
on binarized MNIST (the epoch's cost does not depend on the binarization),
one compiled epoch (vaejax.step) at a time:

  one_layer   784-200-200-50 and back;
  two_layer   784-200-200-100, then 100-100-100-50 for q(z_2|z), and the
              mirror image for p(z|z_2) and p(x|z).

Each with the ELBO (K = 1) and the importance-weighted bound at K = 5. The
batch is --batch_size (Burda's 20 by default: 2,500 steps an epoch). They
alternate epoch by epoch for --repeats rounds after a warm-up epoch each;
the script prints the median seconds per epoch, the spread, and each
two-layer epoch's time relative to the one-layer epoch of the same
objective.
"""

from absl import app
from absl import flags

from benchmarks import common

common.define_data_flags()
flags.DEFINE_integer('repeats', 3, 'Timed epochs per model.')
flags.DEFINE_integer('batch_size', 20, 'Examples per step.')
FLAGS = flags.FLAGS

BURDA = dict(hidden_dims=(200, 200), activation='tanh',
             kernel_init='glorot_uniform', adam_eps=1e-4)
MODELS = {
    'one_layer': dict(latent_dim=50),
    'two_layer': dict(latent_dim=100, top_latent_dim=50, top_hidden_dims=(100, 100)),
}
OBJECTIVES = {
    'elbo K=1': dict(objective='elbo', num_samples=1),
    'iwae K=5': dict(objective='iwae', num_samples=5),
}


def main(argv):
  del argv
  dataset = common.setup()
  for objective, objective_flags in OBJECTIVES.items():
    configs = {name: common.flax_example_config(
        batch_size=FLAGS.batch_size, **BURDA, **model_flags, **objective_flags)
               for name, model_flags in MODELS.items()}
    common.compare_epochs(dataset, configs, FLAGS.repeats,
                          f'{objective}, batch {FLAGS.batch_size}')


if __name__ == '__main__':
  app.run(main)
