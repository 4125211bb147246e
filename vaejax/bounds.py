"""The bounds: the evidence lower bound and the importance-weighted bound.

For a latent-variable model p(x, z) = p(x|z) p(z) and an approximate posterior
q(z|x),

  log p(x) - KL(q(z|x) || p(z|x)) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),

the right-hand side is the ELBO; the training loss is -ELBO.

A `model` is anything with `encode(x)` and `log_likelihood(x, z)` for ONE
example, optionally `prior()`, a keyword-only `key` on a method of its own
randomness, and `latent_layers = L` with `encode_layer` and `prior_layer`
for several stochastic layers: the protocol is in `vaejax.models`, which
adapts a model once where it enters (`models.adapt`). The functions here
take one example; `negative_elbo` and `negative_iwae_bound` are the batched
training losses.

One estimator path serves one and L stochastic layers (one layer is the
chain of length 1): K joint draws (z_1, .., z_L)_k, each layer's draw given
the one below, and per draw log p(x|z_1) and each layer's
log q(z_l|z_{l-1}) - log p(z_l|z_{l+1}) (the top's against p(z_L)). The ELBO is

  E_q[log p(x|z_1) + sum_l log p(z_l|z_{l+1}) + log p(z_L)
      - sum_l log q(z_l|z_{l-1})];

the top layer's KL(q(z_L|z_{L-1}) || p(z_L)) is in closed form for
`analytic_kl=True`, decided from the distributions' types before any
`vmap`; the lower layers' terms are estimated from the draws. The
importance weights are over the joint draws. A minimal two-layer model,
linear-Gaussian:

  class TwoLayers:
    latent_layers = 2
    def encode(self, x):            return (W_q1 @ x, jnp.zeros(4))
    def encode_layer(self, l, z1):  return (W_q2 @ z1, jnp.zeros(2))
    def prior_layer(self, l, z2):   return (W_p1 @ z2, jnp.zeros(4))
    def log_likelihood(self, x, z1):
      return vaejax.gaussian_log_prob(W_x @ z1, jnp.zeros(()), x)

(`vaejax.linear_gaussian.LinearGaussianChain` is such a model with its
exact posterior, for which every log importance weight is log p(x).)
"""

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import distributions
from vaejax import densities
from vaejax import models

class ElboTerms(NamedTuple):
  """The ELBO of one example and its two parts, in nats.

  Attributes:
    elbo: log_likelihood - beta * kl.
    log_likelihood: Monte Carlo estimate of E_q[log p(x|z)], the
      reconstruction term.
    kl: KL(q(z|x) || p(z)), closed form or estimated; for several
      stochastic layers, KL(q(z_1..z_L|x) || p(z_1..z_L)), whose parts
      per layer `elbo_and_kl_per_layer` gives.
  """
  elbo: jax.Array
  log_likelihood: jax.Array
  kl: jax.Array


def reparameterize(key, mean, log_var, num_samples=None):
  """Draws z = mean + exp(log_var / 2) * eps with eps ~ N(0, I).

  `DiagonalGaussian(mean, log_var).sample(key, num_samples)`: the noise is
  drawn latent-major (`distributions.noise`), so that the first k dimensions'
  draws are the same whatever L, and a model padded to more latent
  dimensions, as in a vectorised sweep, draws the noise of the model it pads.

  Args:
    key: a `jax.random.key`.
    mean: `[L]` posterior mean.
    log_var: `[L]` posterior log-variance.
    num_samples: None for one draw of shape `[L]`, or K for `[K, L]`.

  Returns:
    `[L]` or `[K, L]` samples, differentiable in `mean` and `log_var`.
  """
  if num_samples is None:
    std = jnp.exp(0.5 * log_var)
    return mean + std * jax.random.normal(key, mean.shape, mean.dtype)
  return distributions.DiagonalGaussian(mean, log_var).sample(key, num_samples)


def posterior(model, x, key):
  """q(z_1|x) of one example, a checked distribution (`models.Adapted.posterior`).

  A `(mean, log_var)` pair is a `DiagonalGaussian`; an encoder of its own
  randomness gets a key of its own, from `key`.
  """
  return models.adapt(model).posterior(x, key)


def _elbo_and_layer_kls(model, x, key, num_samples, beta, analytic_kl):
  chain = densities.chain(model, x, key, num_samples, analytic_kl)
  log_likelihoods, log_q, log_p, top_kls = chain.weigh(chain.draws)
  log_ratios = log_q - log_p
  layer_kls = jnp.mean(log_ratios, axis=0)
  if chain.analytic:
    top_kl = (distributions.kl_divergence(chain.q, models.Adapted.prior_of(
        chain.p, chain.draws[0])) if log_ratios.shape[-1] == 1
              else jnp.mean(top_kls))
    layer_kls = layer_kls.at[-1].set(top_kl)
  log_likelihood, kl = jnp.mean(log_likelihoods), jnp.sum(layer_kls)
  return ElboTerms(log_likelihood - beta * kl, log_likelihood, kl), layer_kls


def elbo(model, x, key, *, num_samples=1, beta=1.0, analytic_kl=True):
  """The ELBO of one example, E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)).

  Args:
    model: a model of the protocol (`vaejax.models`): `encode(x)`,
      `log_likelihood(x, z)`, optionally `prior()` and more layers.
    x: one example, e.g. `[D]`.
    key: a `jax.random.key` for the reparameterized draws.
    num_samples: K, the number of draws z_k ~ q(z|x) averaged in the
      reconstruction term.
    beta: weight of the KL term (1 for the ELBO proper).
    analytic_kl: True for the closed form `distributions.kl_divergence(q, p)`
      (for a pair without one, a TypeError at trace time); False for the
      estimate 1/K sum_k [log q(z_k|x) - log p(z_k)] on the same draws;
      None for the closed form where the pair has one, else the estimate.
      For a model of several layers this is the top layer's KL; the lower
      layers' terms are always estimated from the draws.

  Returns:
    `ElboTerms` of scalars: elbo = log_likelihood - beta * kl.
  """
  return _elbo_and_layer_kls(model, x, key, num_samples, beta, analytic_kl)[0]


def elbo_and_kl_per_layer(model, x, key, *, num_samples=1, beta=1.0,
                          analytic_kl=True):
  """`elbo(...)` and the parts of its KL per stochastic layer, on the same draws.

  Returns:
    (`ElboTerms` of scalars, `[L]` KLs bottom up): layer l's is
    E_q[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})], the top's in closed form
    or estimated as `analytic_kl` says, the others estimated; they sum to
    `kl`. One layer gives `[1]`, its KL.
  """
  return _elbo_and_layer_kls(model, x, key, num_samples, beta, analytic_kl)


def log_importance_weights(model, x, key, num_samples):
  """log w_k = log p(x, z_k) - log q(z_k|x) for K draws z_k ~ q(z|x).

  Args:
    model: a model of the protocol (`vaejax.models`).
    x: one example, e.g. `[D]`.
    key: a `jax.random.key` for the draws.
    num_samples: K.

  Returns:
    `[K]` log-weights; `iwae_bound` is their log-mean-exp.
  """
  draws, log_weights = _importance_draws(model, x, key, num_samples)
  return log_weights(draws)


def _importance_draws(model, x, key, num_samples):
  """K draws (a pytree of leading axis K) and `log_weights(draws)` -> `[K]`."""
  chain = densities.chain(model, x, key, num_samples, analytic_kl=False)

  def log_weights(draws):
    log_likelihoods, log_q, log_p, _ = chain.weigh(draws)
    return log_likelihoods - jnp.sum(log_q - log_p, axis=-1)

  return chain.draws, log_weights


def iwae_bound(model, x, key, num_samples, *, chunk_size=None):
  """The importance-weighted bound of Burda et al. (2015) for one example.

    L_K = log (1/K sum_k p(x, z_k) / q(z_k|x)),   z_k ~ q(z|x),

  evaluated with logsumexp. L_1 is the ELBO estimate with `analytic_kl=False`
  on the same draw; E[L_K] rises with K towards log p(x), which makes L_K at
  large K the standard estimate of log p(x) (test NLL = -L_K).

  Args:
    model: a model of the protocol (`vaejax.models`).
    x: one example, e.g. `[D]`.
    key: a `jax.random.key` for the draws.
    num_samples: K.
    chunk_size: None to weigh the K draws at once, or S to weigh S at a time
      (a scan with a running logaddexp), bounding the decoder's memory at
      large K. The draws are made first, so the bound is the same, up to
      rounding, whatever S; only the `[K, L]` draws exist at once.

  Returns:
    The scalar bound in nats.

  References:
    Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. 2015.
  """
  if chunk_size is not None and (not isinstance(chunk_size, numbers.Integral)
                                 or isinstance(chunk_size, bool) or chunk_size < 1):
    raise ValueError(f'iwae_bound: chunk_size is {chunk_size!r}; expected None '
                     'or an int, 1 or more')
  draws, log_weights = _importance_draws(model, x, key, num_samples)
  if chunk_size is None or chunk_size >= num_samples:
    return jax.nn.logsumexp(log_weights(draws)) - math.log(num_samples)
  num_chunks = -(-num_samples // chunk_size)

  def chunk_log_sum(c):
    index = c * chunk_size + jnp.arange(chunk_size)
    taken = jax.tree.map(lambda a: a[jnp.minimum(index, num_samples - 1)], draws)
    # A padded draw repeats the last one; its weight is masked out.
    return jax.nn.logsumexp(jnp.where(index < num_samples, log_weights(taken),
                                      -jnp.inf))

  def add_chunk(total, c):
    return jnp.logaddexp(total, chunk_log_sum(c)), None

  total, _ = jax.lax.scan(add_chunk, chunk_log_sum(0), jnp.arange(1, num_chunks))
  return total - math.log(num_samples)


def _batch_keys(function, key, batch):
  """One key per example of `batch` `[B, ...]`, split from `key`."""
  if jnp.ndim(batch) < 1:
    raise ValueError(f'{function} takes a batch [B, ...]; got '
                     f'{checks.shape_of(batch)} (for one example, use elbo or '
                     'iwae_bound)')
  keys = jax.random.split(key, jnp.shape(batch)[0])
  # On a mesh of Explicit axes the batch's type carries its sharding, and
  # vmap needs the keys laid out like the batch along the examples.
  sharding = jax.typeof(batch).sharding
  spec = getattr(sharding, 'spec', None)
  if spec and spec[0] is not None and _explicit(sharding.mesh, spec[0]):
    keys = jax.sharding.reshard(
        keys, jax.sharding.NamedSharding(sharding.mesh,
                                         jax.sharding.PartitionSpec(spec[0])))
  return keys


def _explicit(mesh, names):
  """Whether the mesh axes `names` (a name or a tuple of them) are Explicit."""
  names = names if isinstance(names, tuple) else (names,)
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  return all(types[n] == jax.sharding.AxisType.Explicit for n in names)


def negative_elbo(model, batch, key, *, num_samples=1, beta=1.0,
                  analytic_kl=True):
  """The training loss: the mean over a batch of -ELBO.

  Each example gets its own key, split from `key`, and `elbo` is vmapped over
  the batch.

  Args:
    model: a model of the protocol (`vaejax.models`).
    batch: `[B, ...]` examples.
    key: a `jax.random.key`.
    num_samples: draws per example, as in `elbo`.
    beta: weight of the KL term, as in `elbo`.
    analytic_kl: as in `elbo`.

  Returns:
    (loss, terms): the scalar mean of -elbo over the batch, and the
    per-example `ElboTerms`, each `[B]`.
  """
  keys = _batch_keys('negative_elbo', key, batch)
  per_example = functools.partial(
      elbo, model, num_samples=num_samples, beta=beta, analytic_kl=analytic_kl)
  terms = jax.vmap(per_example)(batch, keys)
  return -jnp.mean(terms.elbo), terms


def negative_iwae_bound(model, batch, key, *, num_samples):
  """The importance-weighted training loss: the mean over a batch of -L_K.

  Burda et al. (2015) train on L_K itself: its gradient weights each draw's
  gradient by its normalised importance weight, where K draws of the ELBO
  weight them equally. At K = 1 the loss is `negative_elbo` with
  `analytic_kl=False` on the same draw. Each example gets its own key, split
  from `key`, as in `negative_elbo`.

  Args:
    model: a model of the protocol (`vaejax.models`).
    batch: `[B, ...]` examples.
    key: a `jax.random.key`.
    num_samples: K.

  Returns:
    (loss, bounds): the scalar mean of -L_K over the batch, and the `[B]`
    per-example bounds.
  """
  keys = _batch_keys('negative_iwae_bound', key, batch)
  bounds = jax.vmap(functools.partial(iwae_bound, model,
                                      num_samples=num_samples))(batch, keys)
  return -jnp.mean(bounds), bounds
