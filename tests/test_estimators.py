"""vaejax.estimators: STL and DReG, MIWAE, PIWAE and CIWAE, against exact answers.

The exact-posterior checks use linear-Gaussian models whose encoder is a
set of parameters of its own, set to the exact posterior p(z|x): there every
log weight is log p(x) whatever z, so an estimator without the score term
has a zero encoder gradient at every draw.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import vaejax
from vaejax import config as config_lib
from vaejax import distributions
from vaejax import estimators
from vaejax import train


class ExactEncoder(NamedTuple):
  """q(z|x) = N(M x + m, L L^T), beside a fixed linear-Gaussian decoder."""
  mean_weight: jax.Array
  mean_bias: jax.Array
  scale_tril: jax.Array
  decoder: vaejax.LinearGaussian

  def encode(self, x):
    return distributions.FullCovarianceGaussian(
        self.mean_weight @ x + self.mean_bias, self.scale_tril)

  def log_likelihood(self, x, z):
    return self.decoder.log_likelihood(x, z)


class ExactDiagonalEncoder(NamedTuple):
  """q(z|x) = N(M x + m, diag(exp(log_var)))."""
  mean_weight: jax.Array
  mean_bias: jax.Array
  log_var: jax.Array
  decoder: vaejax.LinearGaussian

  def encode(self, x):
    return self.mean_weight @ x + self.mean_bias, self.log_var

  def log_likelihood(self, x, z):
    return self.decoder.log_likelihood(x, z)


def _affine(mean_of, dim, dtype):
  """(M, m) with mean_of(y) = M y + m, an affine function of y `[dim]`."""
  zero = jnp.zeros(dim, dtype)
  return jax.jacfwd(mean_of)(zero), mean_of(zero)


def exact_full(dtype):
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3, correlation=0.6,
                                      dtype=dtype)
  weight, bias = _affine(lambda x: model.posterior(x).mean, 6, dtype)
  return ExactEncoder(weight, bias, model.posterior(jnp.zeros(6, dtype)).scale_tril,
                      model)


def exact_diagonal(dtype):
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3, dtype=dtype)
  weight, bias = _affine(lambda x: model.encode(x)[0], 6, dtype)
  return ExactDiagonalEncoder(weight, bias, model.encode(jnp.zeros(6, dtype))[1],
                              model)


class ExactChain(NamedTuple):
  """Two layers: q(z_1|x) and q(z_2|z_1) affine-Gaussian with parameters of
  their own, set to the chain's exact p(z_1|x) and p(z_2|z_1)."""
  weight_1: jax.Array
  bias_1: jax.Array
  tril_1: jax.Array
  weight_2: jax.Array
  bias_2: jax.Array
  tril_2: jax.Array
  decoder: vaejax.LinearGaussianChain

  latent_layers = 2

  def encode(self, x):
    return distributions.FullCovarianceGaussian(self.weight_1 @ x + self.bias_1,
                                                self.tril_1)

  def encode_layer(self, layer, z1):
    del layer
    return distributions.FullCovarianceGaussian(self.weight_2 @ z1 + self.bias_2,
                                                self.tril_2)

  def prior(self):
    return self.decoder.prior()

  def prior_layer(self, layer, z2):
    return self.decoder.prior_layer(layer, z2)

  def log_likelihood(self, x, z1):
    return self.decoder.log_likelihood(x, z1)


def exact_chain(dtype):
  chain = vaejax.make_linear_gaussian_chain(jax.random.key(0), 6, (3, 2),
                                            dtype=dtype)
  w1, b1 = _affine(lambda x: chain.encode(x).mean, 6, dtype)
  w2, b2 = _affine(lambda z: chain.encode_layer(2, z).mean, 3, dtype)
  return ExactChain(w1, b1, chain.encode(jnp.zeros(6, dtype)).scale_tril, w2, b2,
                    chain.encode_layer(2, jnp.zeros(3, dtype)).scale_tril, chain)


EXACT = {'full covariance': exact_full, 'diagonal': exact_diagonal,
         'two layers': exact_chain}


def encoder_gradients(model, loss, keys):
  """The gradient of `loss(model, key)` with respect to the encoder's
  arrays, at each of `keys` (one compiled program)."""
  grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(model, keys)
  return [g for name, g in zip(model._fields, grads) if name != 'decoder']


@pytest.mark.float64
@pytest.mark.parametrize('exact', EXACT)
def test_at_the_exact_posterior_stl_and_dreg_give_no_encoder_gradient(exact, dtype,
                                                                     tol):
  model = EXACT[exact](dtype)
  x = jax.random.normal(jax.random.key(1), (6,), dtype)
  surrogates = {
      'iwae': lambda e: lambda m, k: estimators.iwae_surrogate(m, x, k, 4, estimator=e),
      'elbo': lambda e: lambda m, k: estimators.elbo_surrogate(m, x, k, 2, estimator=e),
  }
  keys = jax.random.split(jax.random.key(10), 5)  # every draw, not on average
  for bound, estimator in [('iwae', 'stl'), ('iwae', 'dreg'), ('elbo', 'stl')]:
    for g in encoder_gradients(model, surrogates[bound](estimator), keys):
      np.testing.assert_allclose(g, 0, atol=tol(1e-4, 1e-11),
                                 err_msg=f'{bound} {estimator}')
  # The standard gradient's score term is not zero at any draw.
  for bound in surrogates:
    grads = encoder_gradients(model, surrogates[bound]('reparameterized'), keys)
    largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g.reshape(len(keys), -1)), axis=1)
                                 for g in grads]), axis=0)
    assert jnp.all(largest > 1e-2), (bound, largest)


class SmallVAE(NamedTuple):
  """A nonlinear VAE of 4 inputs and 2 latents."""
  enc_hidden: jax.Array
  enc_out: jax.Array
  dec_hidden: jax.Array
  dec_out: jax.Array

  def encode(self, x):
    mean, log_var = jnp.split(self.enc_out @ jnp.tanh(self.enc_hidden @ x), 2)
    return mean, log_var

  def log_likelihood(self, x, z):
    return vaejax.bernoulli_log_prob(self.dec_out @ jnp.tanh(self.dec_hidden @ z), x)


def small_vae(dtype):
  keys = jax.random.split(jax.random.key(0), 4)
  shapes = [(5, 4), (4, 5), (5, 2), (4, 5)]
  return SmallVAE(*[jax.random.normal(k, s, dtype) * 0.8 for k, s in zip(keys, shapes)])


def test_dreg_is_unbiased_and_keeps_the_decoder_gradient():
  # Far from the exact posterior (a random small network): DReG's encoder
  # gradient has the standard one's mean, STL's (biased for K > 1) not.
  model = small_vae(jnp.float32)
  x = jnp.array([1.0, 0.0, 1.0, 1.0])
  keys = jax.random.split(jax.random.key(3), 4000)

  def grads(estimator):
    one = lambda k: jax.grad(lambda m: estimators.iwae_surrogate(
        m, x, k, 5, estimator=estimator))(model)
    return jax.jit(jax.vmap(one))(keys)

  dreg, stl, standard = grads('dreg'), grads('stl'), grads('reparameterized')
  # The decoder's gradients, draw for draw.
  for name in ('dec_hidden', 'dec_out'):
    np.testing.assert_allclose(getattr(dreg, name), getattr(standard, name),
                               rtol=1e-4, atol=1e-6)

  def z_scores(a, b):
    """|mean difference| / its standard error, per entry (independent draws:
    the two estimators' keys are the same, so the difference is paired)."""
    difference = a - b
    stderr = jnp.std(difference, axis=0) / np.sqrt(len(keys))
    return jnp.abs(jnp.mean(difference, axis=0)) / (stderr + 1e-12)

  for name in ('enc_hidden', 'enc_out'):
    a, b = getattr(dreg, name), getattr(standard, name)
    live = jnp.std(b, axis=0) > 0  # entries with a gradient at all
    assert jnp.all(jnp.where(live, z_scores(a, b), 0) < 4.5), name
    assert jnp.max(jnp.where(live, z_scores(getattr(stl, name), b), 0)) > 10, name


@pytest.mark.float64
def test_the_surrogates_are_the_bounds_draw_for_draw(dtype, tol):
  model = small_vae(dtype)
  xs = (jax.random.uniform(jax.random.key(1), (3, 4)) < 0.5).astype(dtype)
  keys = jax.random.split(jax.random.key(2), 3)
  rtol = tol(1e-5, 1e-12)
  batched = lambda f: jax.jit(jax.vmap(f))(xs, keys)
  loop = lambda f: jnp.stack([f(x, k) for x, k in zip(xs, keys)])
  iwae = batched(lambda x, k: vaejax.iwae_bound(model, x, k, 6))
  for estimator in estimators.ESTIMATORS:
    f = lambda x, k: estimators.iwae_surrogate(model, x, k, 6, estimator=estimator)
    np.testing.assert_allclose(batched(f), iwae, rtol=rtol)
    np.testing.assert_allclose(loop(f), iwae, rtol=rtol)  # vmap == loop, eager
  elbo = batched(lambda x, k: vaejax.elbo(model, x, k, num_samples=3,
                                          analytic_kl=False).elbo)
  for estimator in ('reparameterized', 'stl'):
    f = lambda x, k: estimators.elbo_surrogate(model, x, k, 3, estimator=estimator)
    np.testing.assert_allclose(batched(f), elbo, rtol=rtol)
  piwae = lambda x, k: estimators.piwae_surrogate(model, x, k, 2, 3)
  np.testing.assert_allclose(batched(piwae), iwae, rtol=rtol)
  # MIWAE with one group is IWAE; with one draw per group, the ELBO of M draws.
  miwae = lambda m, k_: lambda x, k: estimators.miwae_bound(model, x, k, m, k_)
  np.testing.assert_allclose(batched(miwae(1, 6)), iwae, rtol=rtol)
  np.testing.assert_allclose(batched(miwae(3, 1)), elbo, rtol=rtol)
  # Its groups are consecutive draws of the one chain.
  log_w = jax.vmap(lambda x, k: vaejax.log_importance_weights(model, x, k, 6))(xs, keys)
  expected = jnp.mean(jax.nn.logsumexp(log_w.reshape(3, 2, 3), axis=2), axis=1) - np.log(3)
  np.testing.assert_allclose(batched(miwae(2, 3)), expected, rtol=rtol)
  # CIWAE's ends: the ELBO (of K draws, its KL estimated) and the IWAE bound.
  ciwae = lambda beta: lambda x, k: estimators.ciwae_bound(model, x, k, 3, beta=beta)
  iwae3 = batched(lambda x, k: vaejax.iwae_bound(model, x, k, 3))
  np.testing.assert_allclose(batched(ciwae(1.0)), elbo, rtol=rtol)
  np.testing.assert_allclose(batched(ciwae(0.0)), iwae3, rtol=rtol)
  np.testing.assert_allclose(batched(ciwae(0.3)), 0.3 * elbo + 0.7 * iwae3,
                             rtol=rtol)


@pytest.mark.float64
def test_the_bounds_gradients_are_their_true_gradients(dtype):
  model = small_vae(dtype)
  x = jnp.array([1.0, 0.0, 1.0, 1.0], dtype)
  key = jax.random.key(5)
  for bound in (lambda m: estimators.miwae_bound(m, x, key, 2, 3),
                lambda m: estimators.ciwae_bound(m, x, key, 4, beta=0.4),
                lambda m: estimators.iwae_surrogate(m, x, key, 4)):
    check_grads(bound, (model,), order=1, modes=['rev'],
                atol=1e-2 if dtype == jnp.float32 else 1e-6,
                rtol=1e-2 if dtype == jnp.float32 else 1e-6)


def test_piwae_trains_the_decoder_on_iwae_and_the_encoder_on_miwae():
  model = small_vae(jnp.float32)
  x = jnp.array([1.0, 0.0, 1.0, 1.0])
  key = jax.random.key(6)
  grad = lambda f: jax.jit(jax.grad(f))(model)
  piwae = grad(lambda m: estimators.piwae_surrogate(m, x, key, 2, 3))
  iwae = grad(lambda m: vaejax.iwae_bound(m, x, key, 6))
  miwae = grad(lambda m: estimators.miwae_bound(m, x, key, 2, 3))
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
  for name in ('dec_hidden', 'dec_out'):
    close(getattr(piwae, name), getattr(iwae, name))
  for name in ('enc_hidden', 'enc_out'):
    close(getattr(piwae, name), getattr(miwae, name))
  assert not np.allclose(iwae.enc_out, miwae.enc_out, rtol=1e-3)  # they differ


def small_config(workdir, **overrides):
  return config_lib.TrainConfig(
      workdir=str(workdir), dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(16,), latent_dim=2, batch_size=100, num_epochs=1,
      eval_iwae_samples=5, progress=False, **overrides)


@pytest.mark.parametrize('flags', [
    dict(objective='iwae', num_samples=3, gradient_estimator='dreg'),
    dict(objective='iwae', num_samples=3, gradient_estimator='stl'),
    dict(objective='elbo', num_samples=2, analytic_kl=False,
         gradient_estimator='stl'),
    dict(objective='miwae', num_groups=2, num_samples=2),
    dict(objective='piwae', num_groups=2, num_samples=2),
    dict(objective='ciwae', num_samples=3, ciwae_beta=0.5),
], ids=lambda f: ' '.join(f'{k}={v}' for k, v in f.items()))
def test_each_new_flag_trains_and_evaluates(tmp_path, flags):
  results = train.train_and_evaluate(small_config(tmp_path, **flags))
  assert np.isfinite(results['test_elbo']) and np.isfinite(results['test_nll_iwae'])


@pytest.mark.parametrize('flags, message', [
    (dict(gradient_estimator='stl'), 'a closed-form KL has none: add --noanalytic_kl'),
    (dict(gradient_estimator='dreg', analytic_kl=False),
     'for the ELBO use --gradient_estimator=stl'),
    (dict(objective='miwae', gradient_estimator='dreg', analytic_kl=True),
     '--objective=miwae trains with its own gradient'),
    (dict(objective='iwae', num_groups=4), '--num_groups applies to '
     '--objective=miwae and piwae only'),
    (dict(objective='ciwae', ciwae_beta=1.5), '--ciwae_beta must be in [0, 1]'),
    (dict(objective='iwae', ciwae_beta=0.5), '--ciwae_beta applies to --objective=ciwae'),
    (dict(gradient_estimator='score'), "--gradient_estimator='score' is not one of"),
    (dict(objective='piwae', beta=0.5), '--objective=piwae is an importance-weighted bound'),
])
def test_flags_without_a_definition_are_refused_in_one_line(tmp_path, flags, message):
  with pytest.raises(config_lib.ConfigError) as caught:
    config_lib.validate(small_config(tmp_path, **flags))
  assert message in str(caught.value) and '\n' not in str(caught.value)


def test_a_vectorised_sweep_trains_with_dreg(tmp_path):
  from vaejax import sweep  # pylint: disable=g-import-not-at-top
  rows = sweep.run(small_config(tmp_path, objective='iwae', num_samples=3,
                                gradient_estimator='dreg'),
                   sweep.SweepFlags(latent_dims=(1, 2), seeds=(0,), vectorize=True),
                   log=lambda *_: None)
  assert [r['latent_dim'] for r in rows] == [1, 2]
  assert all(np.isfinite(r['test_nll_iwae']) for r in rows)
