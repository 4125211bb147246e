"""Evaluation: the chunked ELBO, the IWAE bound, latent statistics, final results.

Each program maps over equal chunks of examples (`map_over_examples`), so
memory is bounded whatever the evaluation set and K; example i's draws come
from `fold_in(key, i)`, so the result does not depend on the chunking.
`make_final_evaluation` is the end of a run: test ELBO and its parts, the
importance-weighted test NLL, active units and KL per dimension, as one
function that a single run jit-compiles and a sweep maps over its members.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import distributions
from vaejax import kl as kl_lib
from vaejax import models
from vaejax import plots
from vaejax.bounds import elbo_and_kl_per_layer
from vaejax.bounds import iwae_bound

P = jax.sharding.PartitionSpec

# Burda et al. (2015): a unit is active when Var_x(E_q[z_u | x]) > 0.01,
# counted (in their code) over the first 500 training images; vaejax also
# counts over the test set.
ACTIVE_UNIT_THRESHOLD = 0.01
ACTIVE_UNIT_TRAIN_EXAMPLES = 500


def map_over_examples(fn, num_examples, chunk_size, example_sharding=None):
  """Runs `fn(indices [chunk])` over equal chunks covering range(num_examples).

  Chunks hold at most `chunk_size` indices and are as equal as they can be,
  so padding is less than one index per chunk: the last chunk repeats the
  last index and the padded results are dropped. Outputs are concatenated
  along their leading axis.

  With `example_sharding` (a `NamedSharding` of one axis over n devices,
  `vaejax.devices`), each chunk's indices are split over the n devices and
  a chunk holds up to n * `chunk_size` indices, `chunk_size` per device: the
  devices share every chunk, and each one's memory is that of one device's
  chunk. The results are the same: `fn` of an index does not depend on the
  chunk it is in.
  """
  count = 1 if example_sharding is None else example_sharding.mesh.devices.size
  num_chunks = -(-num_examples // (chunk_size * count))
  chunk_size = -(-num_examples // num_chunks)
  chunk_size = -(-chunk_size // count) * count
  indices = jnp.minimum(jnp.arange(num_chunks * chunk_size),
                        num_examples - 1).reshape(num_chunks, chunk_size)
  if example_sharding is not None:
    indices = jax.lax.with_sharding_constraint(indices, jax.sharding.NamedSharding(
        example_sharding.mesh, P(None, *example_sharding.spec)))
    fn = lambda chunk, fn=fn: fn(
        jax.lax.with_sharding_constraint(chunk, example_sharding))
  outputs = jax.lax.map(fn, indices)
  return jax.tree.map(
      lambda a: a.reshape(-1, *a.shape[2:])[:num_examples], outputs)


def _example_keys(key, indices):
  return jax.vmap(functools.partial(jax.random.fold_in, key))(indices)


class EvaluatedTerms(NamedTuple):
  """Mean ELBO terms over a set (`make_evaluate`), and the KL per layer.

  Attributes:
    elbo, log_likelihood, kl: as in `vaejax.ElboTerms`.
    kl_per_layer: `[L]` the KL's parts per stochastic layer, bottom up, for
      a model of several; None for one.
  """
  elbo: jax.Array
  log_likelihood: jax.Array
  kl: jax.Array
  kl_per_layer: jax.Array | None = None


def make_evaluate(model_fn, batch_size, *, example_sharding=None):
  """`evaluate(params, x, key, *model_args)` -> mean `EvaluatedTerms` over x.

  The ELBO proper (beta = 1) with one draw per example, from
  `fold_in(key, index)`, in batches of `batch_size`; its KL in closed form
  where the posterior and prior have one (not the VampPrior's), else the
  estimate from the same draw. `example_sharding`: see `map_over_examples`.
  """

  def evaluate(params, x, key, *model_args):
    model = model_fn(params, *model_args)

    def chunk(indices):
      return jax.vmap(functools.partial(elbo_and_kl_per_layer, model,
                                        analytic_kl=None))(
          x[indices], _example_keys(key, indices))

    terms, kl_per_layer = jax.tree.map(
        lambda a: jnp.mean(a, axis=0),  # [L] per layer kept
        map_over_examples(chunk, x.shape[0], batch_size, example_sharding))
    return EvaluatedTerms(*terms, kl_per_layer if kl_per_layer.shape[0] > 1
                          else None)

  return evaluate


def make_iwae(model_fn, num_samples, chunk_size, *, example_sharding=None):
  """`iwae(params, x, key, *model_args)` -> `[N]` importance-weighted bounds.

  At most `chunk_size` (examples x samples) log-weights exist at once: when
  K > chunk_size, each example's K draws are weighed `chunk_size` at a time
  (`iwae_bound(..., chunk_size=)`), so memory is bounded whatever K. The
  chunking changes no draw: each example's bound is
  `bounds.iwae_bound(model, x, key_x, K)` up to rounding.
  """
  samples_per_chunk = min(num_samples, chunk_size)
  examples_per_chunk = max(1, chunk_size // samples_per_chunk)

  def one_example(model, x, key):
    return iwae_bound(model, x, key, num_samples, chunk_size=samples_per_chunk)

  def iwae(params, x, key, *model_args):
    model = model_fn(params, *model_args)

    def chunk(indices):
      return jax.vmap(functools.partial(one_example, model))(
          x[indices], _example_keys(key, indices))

    return map_over_examples(chunk, x.shape[0], examples_per_chunk,
                             example_sharding)

  return iwae


def make_latent_stats(model_fn, batch_size, *, example_sharding=None):
  """`latent_stats(params, x, key, *model_args)` -> (active units, `[L]` mean KL per dim).

  `key` reaches only an encoder that draws randomness of its own. Each
  example's posterior is reduced to its mean and per-dimension KL where it
  is made, so no batch of posteriors is held (a full covariance's factors,
  or a flow's networks, repeated per example).
  """

  def latent_stats(params, x, key, *model_args):
    model = models.adapt(model_fn(params, *model_args))
    prior = model.prior()

    def summary(x, key):
      q = model.posterior(x, key)
      return q.mean, _kl_per_dim(q, prior)

    means, per_dim = map_over_examples(
        lambda indices: jax.vmap(summary)(x[indices], _example_keys(key, indices)),
        x.shape[0], batch_size, example_sharding)
    if model.layers > 1:
      return _active_per_layer(model, means, key, batch_size,
                               example_sharding), None
    active = jnp.sum(jnp.var(means, axis=0) > ACTIVE_UNIT_THRESHOLD)
    return active, None if per_dim is None else jnp.mean(per_dim, axis=0)

  return latent_stats


def _active_per_layer(model, means, key, batch_size, example_sharding):
  """`[L]` active units of each stochastic layer of the adapted `model`, bottom up.

  E[z_l|x] for l >= 2 is taken through the chain of means: the mean of
  q(z_l | E[z_{l-1}|x]) (not the expectation over z_{l-1}, which would need
  draws and add their noise to the variance over x). A layer of its own
  randomness gets example i's key `fold_in(fold_in(key, i), layer)`.
  """
  counts = [jnp.sum(jnp.var(means, axis=0) > ACTIVE_UNIT_THRESHOLD)]
  for layer in range(2, model.layers + 1):
    means = map_over_examples(
        lambda indices, means=means, layer=layer: jax.vmap(
            lambda z, k: model.posterior_layer(
                layer, z, jax.random.fold_in(k, layer)).mean)(
                    means[indices], _example_keys(key, indices)),
        means.shape[0], batch_size, example_sharding)
    counts.append(jnp.sum(jnp.var(means, axis=0) > ACTIVE_UNIT_THRESHOLD))
  return jnp.stack(counts)


def _kl_per_dim(q, p):
  """`[L]` one example's KL per dimension, where the KL is a sum over
  dimensions (diagonal q, prior N(0, I) or diagonal); else None."""
  if not isinstance(q, distributions.DiagonalGaussian):
    return None
  if p is None or isinstance(p, distributions.StandardNormal):
    return jax.vmap(lambda m, v: kl_lib.standard_normal_kl(m[None], v[None]))(
        q.mean, q.log_var)
  if isinstance(p, distributions.DiagonalGaussian):
    return jax.vmap(lambda m, v, pm, pv: kl_lib.diag_gaussian_kl(
        m[None], v[None], pm[None], pv[None]))(q.mean, q.log_var, p.mean, p.log_var)
  return None


def make_final_evaluation(model_fn, *, batch_size, iwae_samples,
                          iwae_chunk_size, example_sharding=None):
  """`final(params, x, train_x, test_key, iwae_key, *model_args)` -> the final figures.

  `x` is the test set, `train_x` the first `ACTIVE_UNIT_TRAIN_EXAMPLES`
  training examples. Returns a dict of arrays: 'terms' (mean test
  `ElboTerms`, draws from `test_key`), 'bounds' (`[N]` IWAE bounds with K =
  `iwae_samples`, from `iwae_key`), 'active' and 'active_train' (active
  units over `x` and over `train_x`; per layer for several stochastic
  layers) and 'kl_per_dim' (`[L]`). With `example_sharding`, every part
  splits its examples over the devices (`map_over_examples`).
  """
  split = dict(example_sharding=example_sharding)
  evaluate = make_evaluate(model_fn, batch_size, **split)
  iwae = make_iwae(model_fn, iwae_samples, iwae_chunk_size, **split)
  latent_stats = make_latent_stats(model_fn, batch_size, **split)

  def final(params, x, train_x, test_key, iwae_key, *model_args):
    active, kl_per_dim = latent_stats(params, x, test_key, *model_args)
    active_train, _ = latent_stats(params, train_x, test_key, *model_args)
    return {'terms': evaluate(params, x, test_key, *model_args),
            'bounds': iwae(params, x, iwae_key, *model_args),
            'active': active, 'active_train': active_train,
            'kl_per_dim': kl_per_dim}

  return final


def results_of(config, final, test_log_marginal=None):
  """The results.json figures of `final` (host arrays of `make_final_evaluation`).

  `kl_per_dim` is cut to `config.latent_dim` (a sweep's padded member has
  more); `test_log_marginal`, where the data has it, adds the true NLL.
  """
  terms = final['terms']
  bounds = np.asarray(final['bounds'], np.float64)
  results = {
      'epochs': config.num_epochs,
      'latent_dim': config.latent_dim,
      'test_elbo': float(terms.elbo),
      'test_log_likelihood': float(terms.log_likelihood),
      'test_kl': float(terms.kl),
      'test_nll_iwae': float(-bounds.mean()),
      'test_nll_iwae_stderr': float(bounds.std() / np.sqrt(len(bounds))),
      'iwae_samples': config.eval_iwae_samples,
      'active_units': int(np.ravel(final['active'])[0]),
      'active_units_train500': int(np.ravel(final['active_train'])[0]),
      'kl_per_dim': None if final['kl_per_dim'] is None else [
          float(v) for v in final['kl_per_dim'][:config.latent_dim]],
  }
  if np.ndim(final['active']):  # several stochastic layers, bottom up
    results['top_latent_dim'] = config.top_latent_dim
    results['active_units_per_layer'] = [int(a) for a in final['active']]
    results['active_units_train500_per_layer'] = [
        int(a) for a in final['active_train']]
    results['test_kl_per_layer'] = [float(v) for v in terms.kl_per_layer]
  if test_log_marginal is not None:
    results['test_nll_true'] = float(-np.mean(test_log_marginal))
  return results


def save_images(path, model, test_x, samples_key, latent_dim, value_range):
  """reconstructions.png, samples.png (and manifold.png for 2-D z) in `path`.

  manifold.png decodes a grid of the model's own prior (`manifold_latents`),
  named in its title.

  Needs the model's `mean_image(z)` (E[x|z]), as `nets.VAE` has; a model
  without it gets no images.
  """
  model = models.adapt(model)
  if model.mean_image is None:
    return
  # Eager: 16 and 64 examples, once per run; a jit of these closures over
  # the model would compile anew for every member of a sweep.
  decode = jax.vmap(model.mean_image)
  reconstruct = jax.vmap(
      lambda x: model.mean_image(model.posterior(x, samples_key).mean))
  save = functools.partial(plots.save_grid, value_range=value_range)
  originals = test_x[:16]
  save(path / 'reconstructions.png',
       jnp.concatenate([originals, reconstruct(originals)]), num_cols=16)
  z = model.prior_draws(samples_key, 64, latent_dim)
  save(path / 'samples.png', decode(z), num_cols=8)
  if latent_dim == 2:
    z, grid = manifold_latents(model, samples_key, 20)
    save(path / 'manifold.png', decode(z), num_cols=20,
         title=f'E[x|z], z at {grid}')


# Draws of the prior whose marginal quantiles grid manifold.png where the
# prior has none in closed form (a mixture; z_1 of several layers).
MANIFOLD_PRIOR_DRAWS = 10_000


def manifold_latents(model, key, num_per_side):
  """(`[n * n, 2]` latents, what they are): the 2-D grid of manifold.png.

  Each axis at the quantiles (i + 0.5) / n of the model's own prior's
  marginal, so that equal areas of the grid carry equal prior mass: for
  N(0, I) (or no `prior`) Phi^-1 (Kingma & Welling, Fig. 4); for a diagonal
  Gaussian m + s Phi^-1; otherwise (a VampPrior's mixture, z_1 of a
  two-layer model) the quantiles of `MANIFOLD_PRIOR_DRAWS` draws from `key`.
  """
  model = models.adapt(model)
  q = plots.manifold_quantiles(num_per_side)
  p = model.prior()
  if model.layers == 1 and (
      p is None or isinstance(p, distributions.StandardNormal)):
    return plots.manifold_latents(num_per_side), 'N(0, I) quantiles'
  if model.layers == 1 and isinstance(p, distributions.DiagonalGaussian):
    coords = (p.mean[None] + jnp.exp(0.5 * p.log_var)[None]
              * jax.scipy.special.ndtri(q)[:, None])  # [n, 2]
    return plots.grid_of(coords[:, 0], coords[:, 1]), 'prior quantiles'
  draws = model.prior_draws(jax.random.fold_in(key, 1), MANIFOLD_PRIOR_DRAWS, 2)
  coords = jnp.quantile(draws, q, axis=0)
  return (plots.grid_of(coords[:, 0], coords[:, 1]),
          f'quantiles of {MANIFOLD_PRIOR_DRAWS:,} prior draws')
