r"""How far vectorised sweep members are from sequential runs, and why.

  python -m benchmarks.sweep_agreement --tfds_manual_dir=../shared/data

The default model (784-500-z MLP, Bernoulli pixels, Adam 1e-3, batch 128)
on binarized MNIST, seed 0, at each of --latent_dims, trained for the first
N steps of one epoch (each of --steps; 390 is the whole epoch), three ways:

  vectorized  the members as one program (`vaejax.sweep.VectorizedMembers`,
              what `experiments.sweep` runs);
  sequential  each member's own compiled epoch (`vaejax.train`'s);
  perturbed   the sequential run from initial weights each multiplied by
              1 +- 2^-23 (one float32 ulp), --perturbations times.

It prints, per member, the largest relative difference of the per-step
losses (vectorised against sequential) and the test ELBO's difference from
the sequential run's. The perturbed runs show how much float32 round-off
alone moves the trained figures: a difference within their spread is not
one the vectorisation makes.
"""

import dataclasses
import functools

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from vaejax import config as config_lib
from vaejax import evaluation
from vaejax import rng
from vaejax import sweep
from vaejax import train

common.define_data_flags()
flags.DEFINE_list('latent_dims', ['2', '5', '10', '20'], 'The members\' latent sizes.')
flags.DEFINE_list('steps', ['10', '100', '390'],
                  'Training steps (of 128 images, the first of the epoch).')
flags.DEFINE_integer('perturbations', 3, 'One-ulp perturbed runs per member.')
FLAGS = flags.FLAGS


def one_ulp_apart(params, seed):
  """Each weight times 1 +- 2^-23, the signs drawn from `seed`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([
      leaf * (1 + 2.0**-23 * jax.random.rademacher(key, leaf.shape, leaf.dtype))
      for leaf, key in zip(leaves, keys)])


def sequential(config, run, dataset, steps, test_x, perturb=None):
  """(per-step losses, test ELBO) of `config` trained alone for `steps`."""
  graphdef, optimizer, state = run
  keys = rng.RunKeys.of(config)
  model_fn = functools.partial(nnx.merge, graphdef)
  params = state['params'] if perturb is None else one_ulp_apart(
      state['params'], perturb)
  params, _, stats = jax.jit(train.build_train_epoch(
      config, model_fn, optimizer, steps))(
          params, state['opt_state'], dataset.train, jnp.int32(0), keys.train,
          keys.data)
  terms = jax.jit(evaluation.make_evaluate(model_fn, config.eval_batch_size))(
      params, test_x, keys.test)
  return np.asarray(stats['loss'], np.float64), float(terms.elbo)


def main(argv):
  del argv
  full = common.setup()
  configs = [config_lib.TrainConfig(workdir='unused', dataset=FLAGS.dataset,
                                    latent_dim=int(z), progress=False)
             for z in FLAGS.latent_dims]
  batch = configs[0].batch_size
  print(f'{len(configs)} members, latent_dims {FLAGS.latent_dims}, seed 0, '
        f'hidden {configs[0].hidden_dims}, batch {batch}; test ELBO over '
        f'{len(full.test):,} images (nats)')
  print(f'\n{"steps":>5} {"z":>4} {"loss, max rel diff":>19} '
        f'{"vectorised - sequential":>24} {"perturbed - sequential":>30}')
  for steps in (int(s) for s in FLAGS.steps):
    dataset = dataclasses.replace(full, train=full.train[:steps * batch])
    runs = [train.initial_state(c, steps) for c in configs]
    members = sweep.VectorizedMembers(
        configs, [jax.tree.map(np.asarray, state) for _, _, state in runs],
        dataset)
    member_stats = members.train_epoch(0)
    member_elbos = members.evaluate('test')
    for config, run, stats, member in zip(configs, runs, member_stats,
                                          member_elbos):
      losses, elbo = sequential(config, run, dataset, steps, members.test_inputs)
      loss_diff = np.max(np.abs(np.asarray(stats['loss'], np.float64) / losses - 1))
      perturbed = [sequential(config, run, dataset, steps, members.test_inputs,
                              perturb=seed)[1] - elbo
                   for seed in range(FLAGS.perturbations)]
      print(f'{steps:5d} {config.latent_dim:4d} {loss_diff:19.1e} '
            f'{float(member.elbo) - elbo:+24.4f} '
            f'{" ".join(f"{d:+.4f}" for d in perturbed):>30}', flush=True)


if __name__ == '__main__':
  app.run(main)
