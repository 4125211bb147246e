"""One example's joint draws through the chain of stochastic layers, and
their log densities, per draw.

K joint draws (z_1, .., z_L)_k ~ q(z_1|x) q(z_2|z_1) .. q(z_L|z_{L-1}), each
layer's draw given the one below, reparameterised; per draw, log p(x|z_1)
and each layer's log q(z_l|z_{l-1}) and log p(z_l|z_{l+1}) (the top's
against p(z_L)). One layer is the chain of length 1. The bounds
(`vaejax.bounds`) are built from these terms, and so can other estimators
be: `log_densities` gives them per draw, with log q evaluated, if asked, at
the posterior's parameters stopped while every z keeps its reparameterised
path, the form that the sticking-the-landing and doubly-reparameterised
gradient estimators are built from.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaejax import distributions
from vaejax import models

# fold_in tags of the keys given to a model's own randomness (the encoder's
# is `models.ENCODE_TAG`), far from the small indices (examples, sample
# chunks) that are folded into the same keys.
_DECODE_TAG = 2**31 - 2
# fold_in tag of the per-draw keys of the layers above z_1.
_LAYER_TAG = 2**31 - 3


def _decode_keys(key, num_samples):
  """One key per draw for a `log_likelihood` of its own randomness."""
  return jax.random.split(jax.random.fold_in(key, _DECODE_TAG), num_samples)


class Weighed(NamedTuple):
  """Per draw: log p(x|z_1) `[K]`, log q(z_l|z_{l-1}) and log p(z_l|z_{l+1})
  per layer `[K, L]` (bottom up; the top's prior is p(z_L)), and the top
  layer's KL in closed form `[K]` (zeros unless `analytic` and L > 1)."""
  log_likelihood: jax.Array
  log_q: jax.Array
  log_p: jax.Array
  top_kl: jax.Array


class Chain(NamedTuple):
  """One example's K draws through the chain, and how to weigh them.

  `draws` (a pytree of leading axis K: z_1, log q(z_1|x), a key per draw for
  the log-likelihood and one for the layers above) are made first, so that
  weighing any subset of them, as `iwae_bound` does chunk by chunk, gives
  those draws' terms: `weigh(draws)` -> `Weighed`. `weigh(draws, scale)`
  gives the same values, with the gradient that reaches the parameters
  through each draw's z_1, .., z_L (the reparameterisation's path)
  multiplied by that draw's `scale` `[K]` (`scale_path`): the form of the
  doubly-reparameterised estimator (`vaejax.estimators`). `q` is q(z_1|x),
  `p` the top prior (None: N(0, I)).
  """
  q: object
  p: object
  draws: tuple
  weigh: object
  analytic: bool


def chain(model, x, key, num_samples, analytic_kl, stopped=None):
  """The `Chain` of `model` at x: the draws, and whether the top KL is closed form.

  `stopped`: None, or the model with its parameters stopped, which then
  evaluates every log q at the draws (`log_densities`).
  """
  model = models.adapt(model)
  layers = model.layers
  q1 = model.posterior(x, key)
  z1, log_q1 = q1.sample_and_log_prob(key, num_samples)
  count = jnp.shape(z1)[0]
  layer_keys = (jax.random.split(jax.random.fold_in(key, _LAYER_TAG), count)
                if layers > 1 else None)
  draws = (z1, log_q1, _decode_keys(key, count), layer_keys)
  p = model.prior()
  analytic = _analytic(model, analytic_kl, q1, p, z1, layer_keys)

  q1_stopped = None if stopped is None else stopped.posterior(x, key)

  def one_draw(z1, log_q1, decode_key, layer_key, scale=None):
    zs, log_qs, q = [z1], [log_q1], q1
    for layer in range(2, layers + 1):
      q, z, log_q = _draw_layer(model, layer, zs[-1], layer_key)
      zs, log_qs = zs + [z], log_qs + [log_q]
    if scale is not None:
      # Each z drawn as it was, then seen by every density through
      # `scale_path`: its path gradient scaled once, however many layers
      # above it were drawn from it.
      zs = [scale_path(z, scale) for z in zs]
    if stopped is not None:
      log_qs = [_log_prob(q1_stopped, zs[0], 'q(z_1|x)')] + [
          _log_prob(_draw_layer(stopped, layer, zs[layer - 2], layer_key)[0],
                    zs[layer - 1], f'q(z_{layer}|z_{layer - 1})')
          for layer in range(2, layers + 1)]
    z1 = zs[0]
    top = model.prior_of(p, zs[-1])
    log_ps = [top.log_prob(zs[-1])]
    for layer in range(layers - 1, 0, -1):
      p_layer = model.prior_layer(
          layer, zs[layer], jax.random.fold_in(layer_key, _DECODE_TAG - layer),
          jnp.shape(zs[layer - 1])[-1])
      log_ps.insert(0, p_layer.log_prob(zs[layer - 1]))
    log_likelihood = model.log_likelihood(x, z1, decode_key)
    top_kl = (distributions.kl_divergence(q, top) if analytic and layers > 1
              else jnp.zeros((), log_likelihood.dtype))
    return Weighed(log_likelihood, jnp.stack(log_qs), jnp.stack(log_ps), top_kl)

  def weigh(draws, scale=None):
    if scale is None:
      return jax.vmap(one_draw)(*draws)
    if stopped is None:
      raise ValueError('weigh(draws, scale) needs the chain of a stopped '
                       'posterior (chain(..., stopped=...))')
    return jax.vmap(one_draw)(*draws, scale)

  return Chain(q1, p, draws, weigh, analytic)


@jax.custom_vjp
def scale_path(z, scale):
  """z itself, whose cotangent is multiplied by `scale` (a number) on the way
  back: the gradient through z scaled, the value untouched."""
  del scale
  return z


def _scale_path_forward(z, scale):
  return z, scale


def _scale_path_backward(scale, cotangent):
  return cotangent * scale.astype(cotangent.dtype), jnp.zeros_like(scale)


scale_path.defvjp(_scale_path_forward, _scale_path_backward)


def _log_prob(q, z, name):
  """`q.log_prob(z)`, or one line saying that q has none."""
  if not callable(getattr(q, 'log_prob', None)):
    raise TypeError(f'{name} is a {type(q).__name__} without log_prob(z); log q '
                    'with its parameters stopped (stop_posterior) needs it')
  return q.log_prob(z)


def _draw_layer(model, layer, z_below, draw_key):
  """q(z_layer|z_below), one draw of it and its log q, from the draw's key."""
  layer_key = jax.random.fold_in(draw_key, layer)
  q = model.posterior_layer(layer, z_below,
                            jax.random.fold_in(layer_key, models.ENCODE_TAG))
  return (q, *q.sample_and_log_prob(layer_key))


def _analytic(model, analytic_kl, q1, p, z1, layer_keys):
  """Whether the top KL is taken in closed form, from the types of q(z_L|.)
  and p(z_L), found before any vmap (abstractly, for a layer above z_1)."""
  if analytic_kl is not None and not analytic_kl:
    return False
  q_type = type(q1)
  if model.layers > 1:
    def top_posterior(z, layer_key):
      for layer in range(2, model.layers + 1):
        q, z, _ = _draw_layer(model, layer, z, layer_key)
      return q
    q_type = type(jax.eval_shape(top_posterior, z1[0], layer_keys[0]))
  p_type = distributions.StandardNormal if p is None else type(p)
  has_one = distributions.has_closed_form_kl_types(q_type, p_type)
  if analytic_kl is None:
    return has_one
  if not has_one:
    where = "the top layer's KL" if model.layers > 1 else 'KL(q || p)'
    raise TypeError(
        f'analytic_kl=True needs {where} in closed form, and there is none '
        f'for q {q_type.__name__} || p {p_type.__name__}: use '
        'analytic_kl=False (the estimate from the draws)')
  return True




class LogDensities(NamedTuple):
  """Per draw `[K]`, of K joint draws (z_1, .., z_L)_k ~ q(.|x), in nats.

  Attributes:
    log_likelihood: log p(x|z_1).
    log_prior: log p(z_1, .., z_L) = log p(z_L) + sum_l log p(z_l|z_{l+1}).
    log_posterior: log q(z_1, .., z_L|x) = sum_l log q(z_l|z_{l-1}).
  """
  log_likelihood: jax.Array
  log_prior: jax.Array
  log_posterior: jax.Array


def log_densities(model, x, key, num_samples, *, stop_posterior=False):
  """log p(x|z), log p(z) and log q(z|x) at K draws z ~ q(z|x) of one example.

  The draws are those of `vaejax.log_importance_weights(model, x, key,
  num_samples)`, whose log-weights are log_likelihood + log_prior -
  log_posterior, draw for draw, and of `vaejax.iwae_bound` and
  `vaejax.elbo(..., analytic_kl=False)` with the same arguments.

  Args:
    model: a model of the protocol (`vaejax.models`).
    x: one example.
    key: a `jax.random.key` for the draws.
    num_samples: K.
    stop_posterior: False for log q as the draws give it; True for log q
      evaluated (by `log_prob`) with the model's parameters stopped
      (`jax.lax.stop_gradient` over the model, which must be a pytree, as
      `nnx.Module`s are), while each z keeps its reparameterised path: the
      same values, whose gradient is the path derivative alone, without the
      score function E_q[d log q / d params] = 0 (Roeder et al. 2017,
      Tucker et al. 2019).

  Returns:
    `LogDensities` of `[K]` arrays.
  """
  adapted = models.adapt(model)
  stopped = models.adapt(adapted.stopped()) if stop_posterior else None
  terms = chain(adapted, x, key, num_samples, analytic_kl=False, stopped=stopped)
  weighed = terms.weigh(terms.draws)
  return LogDensities(weighed.log_likelihood, jnp.sum(weighed.log_p, axis=-1),
                      jnp.sum(weighed.log_q, axis=-1))
