r"""The gradients' signal-to-noise ratio against K, for each gradient estimator.

  python -m benchmarks.snr --tfds_manual_dir=../shared/data

trains the Flax example's model (784-500-20) for --num_epochs on binarized
MNIST with the IWAE bound (K = 5) into --workdir (reused when it is there),
then, for the first --num_examples test images and each K of --ks,
computes the gradient of the example's IWAE surrogate (vaejax.estimators)
--repeats times from independent draws, and its SNR per parameter,
|mean| / standard deviation over the repeats (Rainforth et al. 2018,
"Tighter variational bounds are not necessarily better"), averaged over the
encoder's parameters and over the decoder's, then over the examples. It
prints a table and plots both against K (log-log) into --output.
Expected: the standard estimator's encoder SNR falls with K (as
O(sqrt(1/K))), DReG's does not; the decoder's rises for both.
"""

import functools

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

import vaejax
from benchmarks import common
from vaejax import estimators
from vaejax import train

common.define_data_flags()
flags.DEFINE_string('workdir', '/tmp/vaejax_snr', 'The trained run (made if missing).')
flags.DEFINE_integer('num_epochs', 3, 'Epochs of the trained model.')
flags.DEFINE_list('ks', ['1', '3', '10', '30', '100', '300', '1000'], 'The K measured.')
flags.DEFINE_integer('repeats', 100, 'Gradients from independent draws, per K.')
flags.DEFINE_integer('num_examples', 4, 'Test images the SNR is averaged over.')
flags.DEFINE_string('output', 'docs/snr.png', 'The plot.')
FLAGS = flags.FLAGS


def snr(model, x, key, num_samples, estimator, repeats):
  """(encoder SNR, decoder SNR): |mean| / std over `repeats` draws, averaged
  over each part's parameters (those with a nonzero spread)."""
  graphdef, params = nnx.split(model, nnx.Param)

  def grad(key):
    return jax.grad(lambda p: estimators.iwae_surrogate(
        nnx.merge(graphdef, p), x, key, num_samples, estimator=estimator))(params)

  grads = jax.lax.map(grad, jax.random.split(key, repeats))

  def part(tree):
    leaves = [g.reshape(repeats, -1) for g in jax.tree.leaves(tree)]
    g = jnp.concatenate(leaves, axis=1)
    std = jnp.std(g, axis=0)
    ratio = jnp.abs(jnp.mean(g, axis=0)) / jnp.where(std > 0, std, 1.0)
    return jnp.sum(jnp.where(std > 0, ratio, 0)) / jnp.sum(std > 0)

  return part(grads['encoder']), part(grads['decoder'])


def main(argv):
  del argv
  common.setup()
  config = common.flax_example_config(
      workdir=FLAGS.workdir, num_epochs=FLAGS.num_epochs, objective='iwae',
      num_samples=5, eval_iwae_samples=100, tfds_data_dir=FLAGS.tfds_data_dir,
      tfds_manual_dir=FLAGS.tfds_manual_dir, progress=False)
  results = train.train_and_evaluate(config)
  print(f'model: {FLAGS.num_epochs} epochs, test NLL (K=100) '
        f'{results["test_nll_iwae"]:.2f} nats')
  run = vaejax.load_run(FLAGS.workdir)
  from vaejax import data  # pylint: disable=g-import-not-at-top
  dataset = data.load(config.dataset, tfds_data_dir=FLAGS.tfds_data_dir,
                      tfds_manual_dir=FLAGS.tfds_manual_dir)
  xs = np.asarray(train.eval_inputs(dataset.test[:FLAGS.num_examples], config, 1))
  ks = [int(k) for k in FLAGS.ks]
  table = {}
  for estimator in estimators.ESTIMATORS:
    measure = jax.jit(functools.partial(snr, estimator=estimator,
                                        repeats=FLAGS.repeats),
                      static_argnums=(3,))
    for k in ks:
      values = np.asarray([measure(run.model, x, jax.random.key(i), k)
                           for i, x in enumerate(xs)])
      table[estimator, k] = values.mean(axis=0)
      print(f'{estimator:16} K={k:5d}  encoder SNR {table[estimator, k][0]:.4f}  '
            f'decoder SNR {table[estimator, k][1]:.4f}', flush=True)
  plot(FLAGS.output, ks, table)
  print(f'wrote {FLAGS.output}')


def plot(path, ks, table):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(10.0, 4.0), layout='constrained')
  axes = fig.subplots(1, 2)
  for ax, index, part in zip(axes, (0, 1), ('encoder', 'decoder')):
    for estimator in estimators.ESTIMATORS:
      ax.plot(ks, [table[estimator, k][index] for k in ks], marker='o',
              label=estimator)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('K')
    ax.set_ylabel(f'{part} gradient SNR')
    ax.set_title(f'{part}: |mean| / std over draws, averaged over parameters',
                 fontsize=9)
    ax.legend()
  fig.savefig(path, dpi=120)


if __name__ == '__main__':
  app.run(main)
