"""The evidence lower bound and the importance-weighted bound.

For a latent-variable model p(x, z) = p(x|z) p(z) and an approximate posterior
q(z|x),

  log p(x) - KL(q(z|x) || p(z|x)) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),

the right-hand side is the ELBO; the training loss is -ELBO.

A `model` is anything with these methods, for ONE example
(`vaejax.models.Model`):

  model.encode(x) -> q(z|x)              a distribution over `[latent_dim]`
                                         (`vaejax.distributions`), or
                                         (mean, log_var), each `[latent_dim]`,
                                         for N(mean, diag(exp(log_var)))
  model.log_likelihood(x, z) -> scalar   log p(x|z)
  model.prior() -> p(z)                  optional; N(0, I) if absent

so users can plug in their own networks, posteriors and priors; a method
with a keyword-only `key` (dropout, stochastic layers) is given a key of its
own, derived from the draws' key, which keeps the draws of z those of a
model without one. The functions here take one example; `negative_elbo` and
`negative_iwae_bound` are the batched training losses.

Several stochastic layers. A model with `latent_layers = L` (an int, 2 or
more) has latents z_1 (next to x) .. z_L (the top), the generative chain
p(z_L) p(z_{L-1}|z_L) .. p(z_1|z_2) p(x|z_1) and the bottom-up inference
chain q(z_1|x) q(z_2|z_1) .. q(z_L|z_{L-1}) (Burda et al.'s two-layer
models), through these methods:

  model.encode(x) -> q(z_1|x)                  as above
  model.encode_layer(l, z) -> q(z_l|z_{l-1})   l = 2..L, z = z_{l-1}
  model.prior() -> p(z_L)                      optional; N(0, I) if absent
  model.prior_layer(l, z) -> p(z_l|z_{l+1})    l = 1..L-1, z = z_{l+1}
  model.log_likelihood(x, z) -> log p(x|z_1)   z = z_1

each for one example and returning a distribution or (mean, log_var); `l`
is a Python int, so a model may hold one network per layer. The ELBO is

  E_q[log p(x|z_1) + sum_l log p(z_l|z_{l+1}) + log p(z_L)
      - sum_l log q(z_l|z_{l-1})],

estimated on K joint draws (z_1, .., z_L)_k, each layer's draw given the one
below; the top layer's KL(q(z_L|z_{L-1}) || p(z_L)) is in closed form for
`analytic_kl=True` (at each draw of z_{L-1}), the lower layers' terms are
estimated from the draws. The importance weights are over the joint draws.
A minimal two-layer model, linear-Gaussian:

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
import inspect
import math
import numbers
import sys
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import distributions
from vaejax import models

# fold_in tags of the keys given to a model's own randomness; far from the
# small indices (examples, sample chunks) that are folded into the same keys.
_ENCODE_TAG = 2**31 - 1
_DECODE_TAG = 2**31 - 2
# fold_in tag of the per-draw keys of the layers above z_1.
_LAYER_TAG = 2**31 - 3


class ElboTerms(NamedTuple):
  """The ELBO of one example and its two parts, in nats.

  Attributes:
    elbo: log_likelihood - beta * kl.
    log_likelihood: Monte Carlo estimate of E_q[log p(x|z)], the
      reconstruction term.
    kl: KL(q(z|x) || p(z)), closed form or estimated; for several
      stochastic layers, KL(q(z_1..z_L|x) || p(z_1..z_L)).
    kl_per_layer: for several stochastic layers, `[L]` each layer's part of
      `kl`, bottom up: E_q[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})] (the
      top's closed form or estimated, the others estimated); None for one.
  """
  elbo: jax.Array
  log_likelihood: jax.Array
  kl: jax.Array
  kl_per_layer: jax.Array | None = None


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
  """q(z|x) of one example, a distribution, from `model.encode(x)`.

  `encode` returns a distribution of `vaejax.distributions` (or one of the
  user's with `sample_and_noise`, `noise_log_prob` and `log_prob`), or a
  `(mean, log_var)` pair, taken as a `DiagonalGaussian`. A model whose
  `encode` takes a `key` gets one of its own, from `key`.
  """
  if models.takes_key(model.encode):
    encoded = model.encode(x, key=jax.random.fold_in(key, _ENCODE_TAG))
  else:
    encoded = model.encode(x)
  return _one_example(encoded, 'model.encode(x)', f'x {checks.shape_of(x)}')


def _one_example(output, call, given):
  """`output` of a model's method as a distribution over one example's `[L]`.

  A one-line ValueError naming `call` and what it was `given` unless a
  Gaussian's parts have the ranks and sizes of one example.
  """
  q = distributions.as_distribution(output)
  if isinstance(q, distributions.DiagonalGaussian):
    parts, expected = (('mean', q.mean, 1), ('log_var', q.log_var, 1)), '[L] each'
  elif isinstance(q, distributions.FullCovarianceGaussian):
    parts = (('mean', q.mean, 1), ('scale_tril', q.scale_tril, 2))
    expected = '[L] and [L, L]'
  else:
    return q
  if (any(jnp.ndim(a) != rank for _, a, rank in parts)
      or len({d for _, a, _ in parts for d in jnp.shape(a)}) != 1):
    got = ' and '.join(f'{name} {checks.shape_of(a)}' for name, a, _ in parts)
    raise ValueError(
        f'{call} returned {got} for {given}; expected {expected} for ONE '
        'example (vmap over a batch, or use negative_elbo)')
  return q


def prior(model, q):
  """p(z): `model.prior()` where the model has one, else N(0, I) of q's size."""
  if not hasattr(model, 'prior'):
    return distributions.StandardNormal(q.dim, jnp.result_type(q.mean))
  p = model.prior()
  if p.dim != q.dim:
    raise ValueError(f'model.prior() is over {p.dim} latent dimensions and '
                     f'model.encode(x) over {q.dim}; they must agree')
  return p


def _log_weights(model, x, q, p, draws):
  """log p(x|z_k) and log q(z_k|x) - log p(z_k) for draws (z, eps, keys) `[K, ...]`.

  log q(z_k|x) is evaluated from the noise, z_k = mean + L eps_k
  (`noise_log_prob`): for a diagonal q, -1/2 sum [log(2 pi) + log_var +
  eps_k^2]. Recovering eps_k as (z_k - mean) / std instead cancels
  catastrophically where std is small next to the mean (5.9 nats off over
  50 dimensions in float32 at mean 8, log_var -30). A `log_likelihood` that
  takes a key gets one per draw, its own.
  """
  def one_draw(z, eps, key):
    return _log_likelihood(model, x, z, key), q.noise_log_prob(eps) - p.log_prob(z)

  return jax.vmap(one_draw)(*draws)


def _decode_keys(key, num_samples):
  """One key per draw for a `log_likelihood` of its own randomness."""
  return jax.random.split(jax.random.fold_in(key, _DECODE_TAG), num_samples)


def _log_likelihood(model, x, z, key):
  """log p(x|z) of one draw, a scalar, checked; `key` if the model takes one."""
  if models.takes_key(model.log_likelihood):
    value = model.log_likelihood(x, z, key=key)
  else:
    value = model.log_likelihood(x, z)
  if jnp.shape(value) != ():
    raise ValueError(
        f'model.log_likelihood(x, z) returned {checks.shape_of(value)} for x '
        f'{checks.shape_of(x)}; expected a scalar, log p(x|z) summed over '
        "the example's dimensions")
  return value


def _draws(model, x, key, num_samples):
  """q, p, and the log-likelihoods and log q - log p of K draws z_k ~ q(z|x)."""
  q, p, draws, weigh = _one_layer_draws(model, x, key, num_samples)
  return q, p, weigh(draws)


def _one_layer_draws(model, x, key, num_samples):
  """q, p, K draws and `weigh(draws)` -> their log p(x|z) and log q - log p.

  The draws (z, eps and a key per draw, each with a leading axis K) are made
  first, so that weighing any subset of them, as `iwae_bound` does chunk by
  chunk, gives those draws' weights.
  """
  q = posterior(model, x, key)
  p = prior(model, q)
  z, eps = q.sample_and_noise(key, num_samples)
  return q, p, (z, eps, _decode_keys(key, z.shape[0])), functools.partial(
      _log_weights, model, x, q, p)


def latent_layers(model):
  """The number of stochastic layers: `model.latent_layers`, else 1."""
  layers = getattr(model, 'latent_layers', 1)
  if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
    raise ValueError(f'model.latent_layers is {layers!r}; expected an int, 1 '
                     'or more')
  missing = [name for name in ('encode_layer', 'prior_layer')
             if layers > 1 and not hasattr(model, name)]
  if missing:
    raise ValueError(f'model.latent_layers is {layers} but the model has no '
                     f'{" or ".join(missing)}; a model of several stochastic '
                     'layers needs both (see vaejax.elbo)')
  return layers


def _conditional(model, method, layer, z, key):
  """`model.<method>(layer, z)` as a checked distribution, with a key if it
  takes one."""
  function = getattr(model, method)
  output = (function(layer, z, key=key) if models.takes_key(function)
            else function(layer, z))
  return _one_example(output, f'model.{method}({layer}, z)', f'z {checks.shape_of(z)}')


def _layered_draws(model, x, key, num_samples, analytic_kl):
  """K joint draws (z_1, .., z_L)_k through the chain of stochastic layers.

  z_1 is drawn as a one-layer model draws it (the same key and noise);
  each higher layer's draw gets a key of its own per draw. Returns
  (log_likelihoods `[K]`, log_ratios `[K, L]`, top_kls `[K]` or None):
  log p(x|z_1); for each layer log q(z_l|z_{l-1}) - log p(z_l|z_{l+1}),
  the top's against p(z_L); and KL(q(z_L|z_{L-1}) || p(z_L)) in closed form
  at each draw when `analytic_kl` asks for it (None: where the pair has one).
  """
  draws, weigh, closed_form = _layered_weighing(model, x, key, num_samples,
                                                analytic_kl)
  log_likelihoods, log_ratios, top_kls = weigh(draws)
  return log_likelihoods, log_ratios, top_kls if closed_form[-1] else None


def _layered_weighing(model, x, key, num_samples, analytic_kl):
  """K draws of z_1 with a key per draw, and `weigh(draws)` (see `_layered_draws`).

  The third value is a list, filled as `weigh` is traced, of whether the
  top layer's KL was taken in closed form.
  """
  layers = latent_layers(model)
  q1 = posterior(model, x, key)
  z1, eps1 = q1.sample_and_noise(key, num_samples)
  draw_keys = jax.random.split(jax.random.fold_in(key, _LAYER_TAG), z1.shape[0])
  decode_keys = _decode_keys(key, z1.shape[0])
  closed_form = []  # decided while tracing: the types are known only then

  def one_draw(z1, eps1, draw_key, decode_key):
    zs, log_qs, qs = [z1], [q1.noise_log_prob(eps1)], [q1]
    for layer in range(2, layers + 1):
      layer_key = jax.random.fold_in(draw_key, layer)
      q = _conditional(model, 'encode_layer', layer, zs[-1],
                       jax.random.fold_in(layer_key, _ENCODE_TAG))
      z, eps = q.sample_and_noise(layer_key)
      zs, log_qs, qs = zs + [z], log_qs + [q.noise_log_prob(eps)], qs + [q]
    top_prior = prior(model, qs[-1])
    log_ps = [top_prior.log_prob(zs[-1])]
    for layer in range(layers - 1, 0, -1):
      p = _conditional(model, 'prior_layer', layer, zs[layer],
                       jax.random.fold_in(draw_key, _DECODE_TAG - layer))
      if p.dim != qs[layer - 1].dim:
        raise ValueError(
            f'model.prior_layer({layer}, z) is over {p.dim} dimensions and '
            f'q(z_{layer}) over {qs[layer - 1].dim}; they must agree')
      log_ps.insert(0, p.log_prob(zs[layer - 1]))
    log_likelihood = _log_likelihood(model, x, z1, decode_key)
    has_one = distributions.has_closed_form_kl(qs[-1], top_prior)
    analytic = has_one if analytic_kl is None else bool(analytic_kl)
    if analytic and not has_one:
      raise TypeError(
          'analytic_kl=True needs the top layer\'s KL in closed form, and there '
          f'is none for q {type(qs[-1]).__name__} || p '
          f'{type(top_prior).__name__}: use analytic_kl=False')
    closed_form.append(analytic)
    top_kl = (distributions.kl_divergence(qs[-1], top_prior) if analytic
              else jnp.zeros((), log_likelihood.dtype))
    ratios = jnp.stack([lq - lp for lq, lp in zip(log_qs, log_ps)])
    return log_likelihood, ratios, top_kl

  return ((z1, eps1, draw_keys, decode_keys),
          lambda draws: jax.vmap(one_draw)(*draws), closed_form)


def elbo(model, x, key, *, num_samples=1, beta=1.0, analytic_kl=True):
  """The ELBO of one example, E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)).

  Args:
    model: has `encode(x)`, returning q(z|x) (a distribution or `(mean,
      log_var)`), `log_likelihood(x, z)`, and optionally `prior()`.
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
  if latent_layers(model) > 1:
    log_likelihoods, log_ratios, top_kls = _layered_draws(
        model, x, key, num_samples, analytic_kl)
    layer_kls = jnp.mean(log_ratios, axis=0)
    if top_kls is not None:
      layer_kls = layer_kls.at[-1].set(jnp.mean(top_kls))
    log_likelihood, kl = jnp.mean(log_likelihoods), jnp.sum(layer_kls)
    return ElboTerms(log_likelihood - beta * kl, log_likelihood, kl, layer_kls)
  q, p, (log_likelihoods, log_ratios) = _draws(model, x, key, num_samples)
  log_likelihood = jnp.mean(log_likelihoods)
  if analytic_kl is None:
    analytic_kl = distributions.has_closed_form_kl(q, p)
  if analytic_kl:
    if not distributions.has_closed_form_kl(q, p):
      raise TypeError(
          f'analytic_kl=True needs KL(q || p) in closed form, and there is none '
          f'for q {type(q).__name__} || p {type(p).__name__}: use '
          'analytic_kl=False (the estimate from the draws)')
    kl = distributions.kl_divergence(q, p)
  else:
    kl = jnp.mean(log_ratios)
  return ElboTerms(log_likelihood - beta * kl, log_likelihood, kl)


def log_importance_weights(model, x, key, num_samples):
  """log w_k = log p(x, z_k) - log q(z_k|x) for K draws z_k ~ q(z|x).

  Args:
    model: has `encode(x)`, `log_likelihood(x, z)` and optionally `prior()`.
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
  if latent_layers(model) > 1:
    draws, weigh, _ = _layered_weighing(model, x, key, num_samples,
                                        analytic_kl=False)

    def log_weights(draws):
      log_likelihoods, log_ratios, _ = weigh(draws)
      return log_likelihoods - jnp.sum(log_ratios, axis=-1)
  else:
    _, _, draws, weigh = _one_layer_draws(model, x, key, num_samples)

    def log_weights(draws):
      log_likelihoods, log_ratios = weigh(draws)
      return log_likelihoods - log_ratios
  return draws, log_weights


def iwae_bound(model, x, key, num_samples, *, chunk_size=None):
  """The importance-weighted bound of Burda et al. (2015) for one example.

    L_K = log (1/K sum_k p(x, z_k) / q(z_k|x)),   z_k ~ q(z|x),

  evaluated with logsumexp. L_1 is the ELBO estimate with `analytic_kl=False`
  on the same draw; E[L_K] rises with K towards log p(x), which makes L_K at
  large K the standard estimate of log p(x) (test NLL = -L_K).

  Args:
    model: has `encode(x)`, `log_likelihood(x, z)` and optionally `prior()`.
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
    model: has `encode(x)`, `log_likelihood(x, z)` and optionally `prior()`.
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
    model: has `encode(x)`, `log_likelihood(x, z)` and optionally `prior()`.
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


class _CallableModule(types.ModuleType):
  """`vaejax.elbo` is this module and, called, the function `elbo`.

  The package exports the module under the function's name, so both
  spellings a user tries work: `vaejax.elbo(model, x, key)` and
  `vaejax.elbo.iwae_bound(...)` (a function exported as `vaejax.elbo`
  would hide the module's other names).
  """

  def __call__(self, *args, **kwargs):
    return elbo(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
sys.modules[__name__].__signature__ = inspect.signature(elbo)
