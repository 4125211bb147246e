"""vaejax.elbo on an exact model: a linear-Gaussian VAE with analytic log p(x).

With the exact posterior as encoder, log p(x, z) - log q(z|x) = log p(x) for
every z; with another encoder, E[ELBO] = log p(x) - KL(q || p(z|x)), and the
importance-weighted bound rises from there towards log p(x) as K grows.
Monte Carlo checks use a tolerance of 5 standard errors of the estimate.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats

import vaejax

pytestmark = pytest.mark.float64

DATA_DIM, LATENT_DIM = 8, 3


@pytest.fixture
def model(dtype):
  return vaejax.make_linear_gaussian(
      jax.random.key(0), DATA_DIM, LATENT_DIM, noise_std=0.5, dtype=dtype)


@pytest.fixture
def data(model):
  return model.sample(jax.random.key(1), 4)


class ShiftedEncoder:
  """The model with a wrong posterior: mean + 0.4, log_var + 0.8."""

  def __init__(self, model):
    self.model = model

  def encode(self, x):
    mean, log_var = self.model.encode(x)
    return mean + 0.4, log_var + 0.8

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


def gap_to_posterior(model, x):
  """KL(q || p(z|x)) for the shifted encoder: the expected ELBO's gap."""
  return vaejax.diag_gaussian_kl(*ShiftedEncoder(model).encode(x),
                                 *model.encode(x))


def per_draw(fn, num_draws):
  """fn(key) on `num_draws` keys, jit-compiled and vmapped: a float64 array."""
  keys = jax.random.split(jax.random.key(42), num_draws)
  return np.asarray(jax.jit(jax.vmap(fn))(keys), np.float64)


def assert_within_standard_errors(draws, expected, num_se=5.0):
  standard_error = draws.std() / np.sqrt(len(draws))
  assert abs(draws.mean() - expected) < num_se * standard_error + 1e-6, (
      draws.mean(), expected, standard_error)


@pytest.mark.jax_defaults
def test_log_marginal_matches_scipy(model, data, tol):
  weight, bias = np.asarray(model.weight, np.float64), np.asarray(model.bias)
  cov = weight @ weight.T + np.exp(float(model.log_var)) * np.eye(DATA_DIM)
  expected = stats.multivariate_normal(bias, cov).logpdf(np.asarray(data))
  np.testing.assert_allclose(jax.vmap(model.log_marginal)(data), expected,
                             rtol=tol(1e-5, 1e-12))


def test_encoder_is_the_exact_posterior(model, data, tol):
  # Bayes' rule for the linear-Gaussian model, in float64 NumPy.
  weight = np.asarray(model.weight, np.float64)
  noise_var = np.exp(float(model.log_var))
  post_cov = np.linalg.inv(np.eye(LATENT_DIM) + weight.T @ weight / noise_var)
  np.testing.assert_allclose(post_cov, np.diag(np.diag(post_cov)), atol=1e-6)
  for x in data:
    mean, log_var = model.encode(x)
    expected_mean = post_cov @ weight.T @ (np.asarray(x) - np.asarray(model.bias))
    np.testing.assert_allclose(mean, expected_mean / noise_var,
                               rtol=tol(1e-5, 1e-10), atol=tol(1e-6, 1e-12))
    np.testing.assert_allclose(jnp.exp(log_var), np.diag(post_cov),
                               rtol=tol(1e-5, 1e-10))


@pytest.mark.jax_defaults
@pytest.mark.parametrize('num_samples', [1, 5])
def test_elbo_is_tight_for_every_draw_with_the_exact_posterior(
    model, data, num_samples, tol):
  for i, x in enumerate(data):
    log_marginal = model.log_marginal(x)
    for seed in range(3):
      terms = vaejax.elbo(model, x, jax.random.key(seed + 10 * i),
                          num_samples=num_samples, analytic_kl=False)
      np.testing.assert_allclose(terms.elbo, log_marginal,
                                 rtol=tol(1e-5, 1e-12))
      bound = vaejax.iwae_bound(model, x, jax.random.key(seed), num_samples)
      np.testing.assert_allclose(bound, log_marginal, rtol=tol(1e-5, 1e-12))


def test_analytic_kl_elbo_averages_to_log_marginal(model, data):
  x = data[0]
  draws = per_draw(lambda key: vaejax.elbo(model, x, key).elbo, 20_000)
  assert draws.std() > 0.1  # the reconstruction term does vary with z
  assert_within_standard_errors(draws, float(model.log_marginal(x)))


@pytest.mark.parametrize('analytic_kl', [True, False])
def test_elbo_gap_is_kl_to_the_posterior(model, data, analytic_kl):
  encoder = ShiftedEncoder(model)
  for x in data[:2]:
    log_marginal = float(model.log_marginal(x))
    gap = float(gap_to_posterior(model, x))
    draws = per_draw(lambda key: vaejax.elbo(
        encoder, x, key, analytic_kl=analytic_kl).elbo, 20_000)
    assert_within_standard_errors(draws, log_marginal - gap)
    standard_error = draws.std() / np.sqrt(len(draws))
    assert log_marginal - draws.mean() > 10 * standard_error


def test_iwae_bound_rises_towards_log_marginal(model, data):
  encoder = ShiftedEncoder(model)
  x = data[1]
  log_marginal = float(model.log_marginal(x))
  means, errors = [], []
  for num_samples in (1, 10, 100, 1000):
    draws = per_draw(
        lambda key: vaejax.iwae_bound(encoder, x, key, num_samples), 1000)
    means.append(draws.mean())
    errors.append(draws.std() / np.sqrt(len(draws)))
    assert draws.mean() < log_marginal + 3 * errors[-1]
  assert_within_standard_errors(
      per_draw(lambda key: vaejax.iwae_bound(encoder, x, key, 1), 20_000),
      log_marginal - float(gap_to_posterior(model, x)))
  for lower, higher, e_lower, e_higher in zip(means, means[1:], errors,
                                              errors[1:]):
    assert higher - lower > 3 * np.hypot(e_lower, e_higher), means
  # The K = 1000 bound closes most of the K = 1 gap.
  assert log_marginal - means[-1] < 0.1 * (log_marginal - means[0]), means


def test_iwae_with_one_sample_is_the_sampled_kl_elbo(model, data, tol):
  encoder = ShiftedEncoder(model)
  for seed, x in enumerate(data):
    key = jax.random.key(seed)
    terms = vaejax.elbo(encoder, x, key, num_samples=1, analytic_kl=False)
    np.testing.assert_allclose(vaejax.iwae_bound(encoder, x, key, 1),
                               terms.elbo, rtol=tol(1e-6, 1e-14))


def test_elbo_terms_follow_their_definitions(model, data, tol):
  encoder = ShiftedEncoder(model)
  x, key = data[0], jax.random.key(3)
  mean, log_var = encoder.encode(x)
  z = vaejax.reparameterize(key, mean, log_var, 7)
  log_likelihoods = jnp.stack([model.log_likelihood(x, z_k) for z_k in z])
  terms = vaejax.elbo(encoder, x, key, num_samples=7, beta=0.3)
  np.testing.assert_allclose(terms.log_likelihood, jnp.mean(log_likelihoods),
                             rtol=tol(1e-6, 1e-13))
  np.testing.assert_allclose(terms.kl, vaejax.standard_normal_kl(mean, log_var),
                             rtol=tol(1e-6, 1e-13))
  np.testing.assert_allclose(terms.elbo, terms.log_likelihood - 0.3 * terms.kl,
                             rtol=tol(1e-6, 1e-13))


def test_reparameterize_draws_from_the_posterior(dtype):
  mean = jnp.asarray([0.5, -2.0, 3.0], dtype)
  log_var = jnp.asarray([0.0, -3.0, 1.5], dtype)
  num_samples = 100_000
  z = vaejax.reparameterize(jax.random.key(0), mean, log_var, num_samples)
  assert z.shape == (num_samples, 3) and z.dtype == dtype
  std = np.exp(0.5 * np.asarray(log_var))
  # Sample mean within 5 standard errors; sample variance within 5 of its own
  # (for a Gaussian, Var[s^2] = 2 sigma^4 / (n - 1)).
  np.testing.assert_array_less(np.abs(z.mean(0) - mean),
                               5 * std / np.sqrt(num_samples))
  np.testing.assert_array_less(np.abs(z.var(0) - std**2),
                               5 * std**2 * np.sqrt(2 / num_samples))
  assert vaejax.reparameterize(jax.random.key(0), mean, log_var).shape == (3,)


def test_reparameterize_draws_agree_on_a_prefix_of_latent_dimensions(dtype):
  # What a vectorised sweep relies on: padding a model's latent space to more
  # dimensions leaves the draws of its own dimensions unchanged.
  key = jax.random.key(3)
  for num_samples in (None, 1, 5):
    small = vaejax.reparameterize(key, jnp.zeros(3, dtype), jnp.zeros(3, dtype),
                                  num_samples)
    large = vaejax.reparameterize(key, jnp.zeros(8, dtype), jnp.zeros(8, dtype),
                                  num_samples)
    np.testing.assert_array_equal(small, large[..., :3])


def test_reparameterize_gradients(dtype, tol):
  mean = jnp.asarray([0.5, -2.0], dtype)
  log_var = jnp.asarray([0.3, -1.0], dtype)
  key = jax.random.key(5)
  z = vaejax.reparameterize(key, mean, log_var)
  d_mean, d_log_var = jax.jacobian(vaejax.reparameterize, argnums=(1, 2))(
      key, mean, log_var)
  np.testing.assert_allclose(d_mean, np.eye(2), rtol=tol(1e-6, 1e-14))
  # dz/dlog_var = exp(log_var / 2) eps / 2 = (z - mean) / 2.
  np.testing.assert_allclose(d_log_var, np.diag((z - mean) / 2),
                             rtol=tol(1e-6, 1e-14))


def test_same_key_same_draw_and_different_keys_differ(model, data):
  x = data[0]
  encoder = ShiftedEncoder(model)
  first = vaejax.elbo(encoder, x, jax.random.key(0))
  again = vaejax.elbo(encoder, x, jax.random.key(0))
  other = vaejax.elbo(encoder, x, jax.random.key(1))
  assert first.elbo == again.elbo
  assert first.log_likelihood != other.log_likelihood
  assert first.kl == other.kl  # the analytic KL does not depend on the draw
  mean, log_var = encoder.encode(x)
  draws = [vaejax.reparameterize(jax.random.key(s), mean, log_var, 4)
           for s in (0, 0, 1)]
  np.testing.assert_array_equal(draws[0], draws[1])
  assert not np.any(np.asarray(draws[0]) == np.asarray(draws[2]))


@pytest.mark.jax_defaults
def test_jit_equals_eager_and_vmap_equals_loop(model, data, tol):
  encoder = ShiftedEncoder(model)
  keys = jax.random.split(jax.random.key(7), len(data))
  for fn in (
      functools.partial(vaejax.elbo, encoder, num_samples=3),
      functools.partial(vaejax.elbo, encoder, analytic_kl=False, beta=2.0),
      functools.partial(vaejax.iwae_bound, encoder, num_samples=50),
  ):
    eager = [fn(x, key) for x, key in zip(data, keys)]
    jitted = [jax.jit(fn)(x, key) for x, key in zip(data, keys)]
    batched = jax.jit(jax.vmap(fn))(data, keys)
    eager, jitted = (jax.tree.map(lambda *a: jnp.stack(a), *r)
                     for r in (eager, jitted))
    jax.tree.map(functools.partial(np.testing.assert_allclose,
                                   rtol=tol(1e-5, 1e-12)), jitted, eager)
    jax.tree.map(functools.partial(np.testing.assert_allclose,
                                   rtol=tol(1e-5, 1e-12)), batched, eager)


def test_negative_elbo_is_the_batch_mean(model, data, tol):
  encoder = ShiftedEncoder(model)
  key = jax.random.key(11)
  loss, terms = jax.jit(
      lambda batch, key: vaejax.negative_elbo(encoder, batch, key, beta=0.5))(
          data, key)
  keys = jax.random.split(key, len(data))
  expected = [vaejax.elbo(encoder, x, k, beta=0.5) for x, k in zip(data, keys)]
  np.testing.assert_allclose(terms.elbo, [t.elbo for t in expected],
                             rtol=tol(1e-5, 1e-12))
  np.testing.assert_allclose(loss, -np.mean([t.elbo for t in expected]),
                             rtol=tol(1e-5, 1e-12))
  assert terms.kl.shape == (len(data),)


def test_negative_iwae_bound_is_the_batch_mean(model, data, tol):
  encoder = ShiftedEncoder(model)
  key = jax.random.key(12)
  loss, bounds = jax.jit(lambda batch, key: vaejax.negative_iwae_bound(
      encoder, batch, key, num_samples=5))(data, key)
  keys = jax.random.split(key, len(data))
  expected = [vaejax.iwae_bound(encoder, x, k, 5) for x, k in zip(data, keys)]
  np.testing.assert_allclose(bounds, expected, rtol=tol(1e-5, 1e-12))
  np.testing.assert_allclose(loss, -np.mean(expected), rtol=tol(1e-5, 1e-12))


class ShiftParams:
  """ShiftedEncoder with its shifts as parameters (a pytree to differentiate)."""

  def __init__(self, model, mean_shift, log_var_shift):
    self.model, self.mean_shift, self.log_var_shift = (
        model, mean_shift, log_var_shift)

  def encode(self, x):
    mean, log_var = self.model.encode(x)
    return mean + self.mean_shift, log_var + self.log_var_shift

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


def shift_loss(loss_fn, model, data):
  def loss(mean_shift, log_var_shift, weight):
    shifted = vaejax.LinearGaussian(
        model.weight * weight, model.bias, model.log_var)
    return loss_fn(ShiftParams(shifted, mean_shift, log_var_shift), data)
  return loss


def test_iwae_loss_with_one_sample_is_the_sampled_kl_loss_with_its_gradient(
    model, data, tol):
  key = jax.random.key(13)
  iwae = shift_loss(lambda m, d: vaejax.negative_iwae_bound(
      m, d, key, num_samples=1)[0], model, data)
  elbo = shift_loss(lambda m, d: vaejax.negative_elbo(
      m, d, key, analytic_kl=False)[0], model, data)
  args = (jnp.full(LATENT_DIM, 0.4, model.bias.dtype),
          jnp.full(LATENT_DIM, 0.8, model.bias.dtype),
          jnp.ones((), model.bias.dtype))
  np.testing.assert_allclose(iwae(*args), elbo(*args), rtol=tol(1e-6, 1e-13))
  for got, want in zip(jax.grad(iwae, (0, 1, 2))(*args),
                       jax.grad(elbo, (0, 1, 2))(*args)):
    np.testing.assert_allclose(got, want, rtol=tol(1e-5, 1e-12),
                               atol=tol(1e-6, 1e-13))


def test_iwae_loss_gradients_match_finite_differences(model, data, dtype):
  if dtype != jnp.float64:
    pytest.skip('finite differences need float64')
  key = jax.random.key(14)
  loss = shift_loss(lambda m, d: vaejax.negative_iwae_bound(
      m, d, key, num_samples=7)[0], model, data)
  check_grads(jax.jit(loss), (jnp.full(LATENT_DIM, 0.4), jnp.full(LATENT_DIM, 0.8),
                              jnp.ones(())), order=2, modes=('rev',))


def test_gradient_of_the_loss_reaches_the_model_parameters(model, data):
  # d(-ELBO)/d(params) through the model as a pytree, as a trainer takes it.
  def loss(params, key):
    return vaejax.negative_elbo(params, data, key)[0]

  grads = jax.jit(jax.grad(loss))(model, jax.random.key(0))
  for leaf in jax.tree.leaves(grads):
    assert jnp.all(jnp.isfinite(leaf)) and jnp.any(leaf != 0)


class FixedPosterior:
  """q(z|x) = N(mean, diag(exp(log_var))) whatever x, and log p(x|z) = 0."""

  def __init__(self, mean, log_var):
    self.mean, self.log_var = mean, log_var

  def encode(self, x):
    del x
    return self.mean, self.log_var

  def log_likelihood(self, x, z):
    del x
    return jnp.zeros((), z.dtype)


@pytest.mark.parametrize('mean, log_var', [(8.0, -30.0), (-3.0, -25.0),
                                           (100.0, -20.0), (0.0, 0.0)])
def test_log_weights_are_exact_at_tiny_variances(mean, log_var, dtype, tol):
  # log w_k = log p(z_k) - log q(z_k|x). Reference in float64 numpy from the
  # draws' own noise eps (latent-major, as `reparameterize` draws it):
  # log q = -1/2 sum [log 2 pi + log_var + eps^2], log p at z = mean + std eps.
  latent_dim, num_samples = 50, 8
  model = FixedPosterior(jnp.full((latent_dim,), mean, dtype),
                         jnp.full((latent_dim,), log_var, dtype))
  key = jax.random.key(3)
  got = vaejax.log_importance_weights(model, jnp.zeros(1, dtype), key, num_samples)
  eps = np.asarray(jax.random.normal(key, (latent_dim, num_samples), dtype),
                   np.float64).T
  z = np.float64(mean) + np.exp(0.5 * log_var) * eps
  log_q = -0.5 * np.sum(np.log(2 * np.pi) + log_var + eps ** 2, axis=1)
  log_p = -0.5 * np.sum(np.log(2 * np.pi) + z ** 2, axis=1)
  # float32: z itself rounds to the float32 grid (|dz| <= ulp(mean)), which
  # moves log p by about |mean| ulp(mean) per dimension.
  atol = tol(latent_dim * abs(mean) * np.spacing(np.float32(max(abs(mean), 1))) + 1e-3,
             1e-9)
  np.testing.assert_allclose(got, log_p - log_q, rtol=tol(1e-6, 1e-12), atol=atol)
  terms = vaejax.elbo(model, jnp.zeros(1, dtype), key, num_samples=num_samples,
                      analytic_kl=False)
  np.testing.assert_allclose(terms.kl, np.mean(log_q - log_p), rtol=tol(1e-6, 1e-12),
                             atol=atol)
