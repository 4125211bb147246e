"""vaejax.log_densities: per-draw log p(x|z), log p(z), log q(z|x), and log q
with the posterior's parameters stopped."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
from vaejax import distributions as dist
from vaejax import linear_gaussian as lg


class Amortised(NamedTuple):
  """A linear-Gaussian model whose encoder has parameters of its own: q(z|x)
  = N(A x + c, diag(exp(log_var))), the decoder's parameters in `model`."""
  model: vaejax.LinearGaussian
  weight: jax.Array
  bias: jax.Array
  log_var: jax.Array

  def encode(self, x):
    return self.weight @ x + self.bias, self.log_var

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


def exact_encoder(model, data_dim):
  """`Amortised` at the exact posterior: `model.encode` is affine in x."""
  mean = lambda x: model.encode(x)[0]
  zero = jnp.zeros(data_dim, model.bias.dtype)
  return Amortised(model, jax.jacfwd(mean)(zero), mean(zero), model.encode(zero)[1])


def log_weights(densities):
  return densities.log_likelihood + densities.log_prior - densities.log_posterior


@pytest.mark.float64
@pytest.mark.parametrize('stop_posterior', [False, True])
@pytest.mark.parametrize('layers', [1, 2])
def test_the_densities_are_the_importance_weights_draw_for_draw(
    layers, stop_posterior, dtype, tol):
  if layers == 1:
    model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3,
                                        correlation=0.3, dtype=dtype)
  else:
    model = vaejax.make_linear_gaussian_chain(jax.random.key(0), 6, (3, 2),
                                              dtype=dtype)
  x = model.sample(jax.random.key(1), 1)[0]
  key = jax.random.key(2)
  densities = vaejax.log_densities(model, x, key, 7, stop_posterior=stop_posterior)
  assert all(a.shape == (7,) and a.dtype == dtype for a in densities)
  # A log-weight is a difference of terms of some nats: float32 rounds it
  # to about 1e-6 of them.
  rtol, atol = tol(2e-6, 1e-12), tol(1e-5, 1e-11)
  np.testing.assert_allclose(log_weights(densities),
                             vaejax.log_importance_weights(model, x, key, 7),
                             rtol=rtol, atol=atol)
  jitted = jax.jit(vaejax.log_densities, static_argnums=3,
                   static_argnames='stop_posterior')(
                       model, x, key, 7, stop_posterior=stop_posterior)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
               jitted, densities)
  # The ELBO with the KL estimated is their mean, on the same draws.
  terms = vaejax.elbo(model, x, key, num_samples=7, analytic_kl=False)
  np.testing.assert_allclose(terms.log_likelihood,
                             jnp.mean(densities.log_likelihood), rtol=rtol)
  np.testing.assert_allclose(
      terms.kl, jnp.mean(densities.log_posterior - densities.log_prior),
      rtol=rtol, atol=atol)


@pytest.mark.float64
def test_at_the_exact_posterior_stopped_log_q_leaves_the_encoder_no_gradient(
    dtype, tol):
  # With q the exact posterior, log w = log p(x) for every z, so its path
  # derivative is 0; the score function, d log q / d params at fixed z, is
  # not, and it is all that stop_posterior removes.
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3, dtype=dtype)
  amortised = exact_encoder(model, 6)
  x = model.sample(jax.random.key(1), 1)[0]
  np.testing.assert_allclose(log_weights(vaejax.log_densities(
      amortised, x, jax.random.key(2), 5)), model.log_marginal(x) * jnp.ones(5),
                             rtol=tol(1e-5, 1e-12))

  def encoder_gradients(stop_posterior):
    def weight_k(encoder, k):
      return log_weights(vaejax.log_densities(
          amortised._replace(**encoder), x, jax.random.key(2), 5,
          stop_posterior=stop_posterior))[k]
    encoder = {f: getattr(amortised, f) for f in ('weight', 'bias', 'log_var')}
    return [jax.grad(weight_k)(encoder, k) for k in range(5)]

  for per_draw in encoder_gradients(True):
    for g in jax.tree.leaves(per_draw):
      np.testing.assert_allclose(g, 0.0, atol=tol(2e-5, 1e-11))
  largest = max(float(jnp.max(jnp.abs(g)))
                for per_draw in encoder_gradients(False)
                for g in jax.tree.leaves(per_draw))
  assert largest > 0.1


@pytest.mark.jax_defaults
def test_a_model_that_is_not_a_pytree_or_a_q_without_log_prob_is_refused():
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3)
  x = model.sample(jax.random.key(1), 1)[0]

  class Plain:  # not a pytree
    encode = staticmethod(model.encode)
    log_likelihood = staticmethod(model.log_likelihood)

  vaejax.log_densities(Plain(), x, jax.random.key(2), 3)  # fine unstopped
  with pytest.raises(TypeError, match='Plain. is not a pytree, so its '
                     'parameters cannot be stopped'):
    vaejax.log_densities(Plain(), x, jax.random.key(2), 3, stop_posterior=True)

  @jax.tree_util.register_dataclass
  @dataclasses.dataclass
  class DrawsOnly:
    inner: dist.DiagonalGaussian

    def sample_and_log_prob(self, key, num_samples=None):
      return self.inner.sample_and_log_prob(key, num_samples)

  class WithDrawsOnly(NamedTuple):
    model: vaejax.LinearGaussian

    def encode(self, x):
      return DrawsOnly(dist.DiagonalGaussian(*self.model.encode(x)))

    def log_likelihood(self, x, z):
      return self.model.log_likelihood(x, z)

  with pytest.raises(TypeError, match=r'q\(z_1\|x\) is a DrawsOnly without '
                     r'log_prob\(z\)'):
    vaejax.log_densities(WithDrawsOnly(model), x, jax.random.key(2), 3,
                         stop_posterior=True)
