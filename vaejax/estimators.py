"""Gradient estimators of the bounds, and the bounds of Rainforth et al. (2018).

Each function is one example's surrogate: its value is the bound, its
gradient the estimator's, so `jax.grad` of a batch mean trains with it.
With w_k = p(x, z_k) / q(z_k|x) at K reparameterised draws and the
normalised weights w~_k = w_k / sum_j w_j:

  reparameterized  grad log (1/K sum_k w_k): every term of log w_k, the
                   score of q among them (Burda et al. 2015)
  stl              sum_k w~_k grad log w_k, log q at the posterior's
                   parameters stopped: the score term dropped (Roeder,
                   Wu & Duvenaud 2017); zero when q is the exact posterior
  dreg             sum_k w~_k grad_theta log w_k + sum_k w~_k^2 grad_path
                   log w_k, log q stopped (Tucker, Lawson, Gu & Maddison
                   2019): unbiased, and zero at the exact posterior

where grad_theta is the gradient at fixed z (the parameters of log p(x, z))
and grad_path the gradient through the draws z(eps; phi), every layer's.
The tighter bounds, each on M * K draws of one chain:

  miwae_bound(M, K)   1/M sum_m log (1/K sum_k w_mk)
  piwae_surrogate     log p's parameters on the IWAE bound of all M * K
                      draws, the posterior's (path and score) on MIWAE
  ciwae_bound(beta)   beta * ELBO + (1 - beta) * IWAE bound, same K draws

`densities.chain` makes and weighs the draws; the same arguments draw the
same z as `vaejax.iwae_bound` and `vaejax.log_importance_weights`.
"""

import math

import jax
import jax.numpy as jnp

from vaejax import densities
from vaejax import models
from vaejax.bounds import log_importance_weights

ESTIMATORS = ('reparameterized', 'stl', 'dreg')


def _log_weights(weighed):
  return weighed.log_likelihood - jnp.sum(weighed.log_q - weighed.log_p, axis=-1)


def _stopped_chain(model, x, key, num_samples):
  adapted = models.adapt(model)
  return densities.chain(adapted, x, key, num_samples, analytic_kl=False,
                         stopped=models.adapt(adapted.stopped()))


def _value_with_gradient_of(value, surrogate):
  """`value`, whose gradient is `surrogate`'s."""
  return jax.lax.stop_gradient(value) + surrogate - jax.lax.stop_gradient(surrogate)


def _check(name, value, choices):
  if value not in choices:
    raise ValueError(f'{name} is {value!r}; expected one of {", ".join(choices)}')


def iwae_surrogate(model, x, key, num_samples, *, estimator='reparameterized'):
  """The importance-weighted bound L_K of one example, with `estimator`'s gradient.

  Args:
    model: a model of the protocol (`vaejax.models`); for 'stl' and 'dreg'
      a pytree (its parameters are stopped in log q).
    x: one example.
    key: a `jax.random.key`; the draws are `vaejax.iwae_bound`'s.
    num_samples: K.
    estimator: 'reparameterized', 'stl' or 'dreg' (module docstring).

  Returns:
    The scalar bound, equal to `vaejax.iwae_bound(model, x, key, K)`.
  """
  _check('estimator', estimator, ESTIMATORS)
  if estimator == 'reparameterized':
    log_w = log_importance_weights(model, x, key, num_samples)
    return jax.nn.logsumexp(log_w) - math.log(num_samples)
  chain = _stopped_chain(model, x, key, num_samples)
  log_w = _log_weights(chain.weigh(chain.draws))
  bound = jax.nn.logsumexp(log_w) - math.log(num_samples)
  if estimator == 'stl':
    return bound  # sum_k w~_k grad log w_k, log q stopped
  w = jax.lax.stop_gradient(jax.nn.softmax(log_w))
  # log w_k again, its path gradient scaled by w~_k: weighted by w~_k once
  # more, sum_k w~_k^2 grad_path, while grad_theta keeps one w~_k.
  scaled = _log_weights(chain.weigh(chain.draws, w))
  return _value_with_gradient_of(bound, jnp.sum(w * scaled))


def elbo_surrogate(model, x, key, num_samples=1, *, beta=1.0,
                   estimator='reparameterized'):
  """The K-draw ELBO estimate of one example with `estimator`'s gradient.

  1/K sum_k [log p(x|z_k) - beta (log q(z_k|x) - log p(z_k))], the KL
  estimated from the draws (`vaejax.elbo(..., analytic_kl=False)`'s
  value); 'stl' evaluates log q with the posterior's parameters stopped: at
  K draws, the average of K one-draw STL terms.
  """
  _check('estimator', estimator, ('reparameterized', 'stl'))
  if estimator == 'reparameterized':
    chain = densities.chain(model, x, key, num_samples, analytic_kl=False)
  else:
    chain = _stopped_chain(model, x, key, num_samples)
  weighed = chain.weigh(chain.draws)
  kl = jnp.sum(weighed.log_q - weighed.log_p, axis=-1)
  return jnp.mean(weighed.log_likelihood - beta * kl)


def _grouped(model, x, key, num_groups, num_samples):
  log_w = log_importance_weights(model, x, key, num_groups * num_samples)
  return log_w.reshape(num_groups, num_samples)


def miwae_bound(model, x, key, num_groups, num_samples):
  """MIWAE(M, K) of one example: the mean of M IWAE bounds of K draws each.

  The M * K draws are those of `vaejax.iwae_bound(model, x, key, M * K)`, in
  M consecutive groups: M = 1 is the IWAE bound L_K, K = 1 the ELBO
  estimate of M draws (`vaejax.elbo(..., num_samples=M, analytic_kl=False)`).
  """
  log_w = _grouped(model, x, key, num_groups, num_samples)
  return jnp.mean(jax.nn.logsumexp(log_w, axis=1)) - math.log(num_samples)


def ciwae_bound(model, x, key, num_samples, *, beta):
  """CIWAE(beta) of one example: beta * ELBO + (1 - beta) * L_K, on the same
  K draws (the ELBO with its KL estimated from them)."""
  log_w = log_importance_weights(model, x, key, num_samples)
  iwae = jax.nn.logsumexp(log_w) - math.log(num_samples)
  return beta * jnp.mean(log_w) + (1 - beta) * iwae


def piwae_surrogate(model, x, key, num_groups, num_samples):
  """PIWAE(M, K) of one example: the IWAE bound of its M * K draws, whose
  gradient is that bound's for log p's parameters (at fixed z) and
  MIWAE(M, K)'s through the posterior (the draws' paths and log q's score).

  The model must be a pytree (log q's and log p's parameters are stopped in
  parts of the surrogate).
  """
  chain = _stopped_chain(model, x, key, num_groups * num_samples)
  full = densities.chain(model, x, key, num_groups * num_samples,
                         analytic_kl=False)
  # The same draws and values: every gradient, and log p's at fixed z alone
  # (log q stopped, the paths scaled by 0).
  log_w = _log_weights(full.weigh(full.draws))
  direct = _log_weights(chain.weigh(chain.draws, jnp.zeros_like(log_w)))
  iwae = jax.nn.logsumexp(log_w) - math.log(num_groups * num_samples)
  w_all = jax.lax.stop_gradient(jax.nn.softmax(log_w))
  w_groups = jax.lax.stop_gradient(jax.nn.softmax(
      log_w.reshape(num_groups, num_samples), axis=1)).reshape(-1)
  surrogate = (jnp.sum(w_all * direct)
               + jnp.sum(w_groups * (log_w - direct)) / num_groups)
  return _value_with_gradient_of(iwae, surrogate)
