"""The ELBO with other posteriors and priors, on exact linear-Gaussian models.

A correlated W (columns not orthogonal) makes the exact posterior a
full-covariance Gaussian: as the encoder, every log importance weight is
log p(x). The best diagonal posterior falls short by the mean-field gap
1/2 (sum_k log Lambda_kk - log det Lambda). A non-standard prior is checked
the same way, on a model whose marginal is computed here in NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vaejax
from vaejax import data as data_lib

pytestmark = pytest.mark.float64

DATA_DIM, LATENT_DIM = 8, 3


@pytest.fixture
def model(dtype):
  return vaejax.make_linear_gaussian(jax.random.key(0), DATA_DIM, LATENT_DIM,
                                     noise_std=0.5, correlation=0.8, dtype=dtype)


@pytest.fixture
def data(model):
  return model.sample(jax.random.key(1), 4)


def numpy_precision(model):
  weight = np.asarray(model.weight, np.float64)
  return np.eye(LATENT_DIM) + weight.T @ weight / np.exp(float(model.log_var))


class Encoder:
  """The linear-Gaussian model with `encode` replaced."""

  def __init__(self, model, encode):
    self.model, self.encode = model, encode

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


def test_posterior_is_bayes_rule(model, data, tol):
  precision = numpy_precision(model)
  cov = np.linalg.inv(precision)
  assert np.max(np.abs(cov - np.diag(np.diag(cov)))) > 0.05  # not diagonal
  weight, bias = np.asarray(model.weight, np.float64), np.asarray(model.bias, np.float64)
  for x in data:
    q = model.posterior(x)
    assert isinstance(q, vaejax.FullCovarianceGaussian)
    expected_mean = cov @ weight.T @ (np.asarray(x, np.float64) - bias) / np.exp(
        float(model.log_var))
    np.testing.assert_allclose(q.mean, expected_mean, rtol=tol(1e-4, 1e-10),
                               atol=tol(1e-5, 1e-12))
    np.testing.assert_allclose(np.tril(q.scale_tril), q.scale_tril)
    np.testing.assert_allclose(q.scale_tril @ q.scale_tril.T, cov,
                               rtol=tol(1e-4, 1e-10), atol=tol(1e-6, 1e-13))


@pytest.mark.parametrize('num_samples', [1, 7])
def test_exact_full_covariance_posterior_makes_every_weight_log_p(
    model, data, num_samples, tol):
  encoder = Encoder(model, model.posterior)
  for i, x in enumerate(data):
    log_weights = vaejax.log_importance_weights(encoder, x, jax.random.key(i),
                                                num_samples)
    np.testing.assert_allclose(log_weights, np.full(num_samples, model.log_marginal(x)),
                               rtol=tol(1e-5, 1e-12))
    # The analytic KL is KL(p(z|x) || p(z)): the ELBO is exact in expectation,
    # and here the reconstruction term is exact per draw only on average.
    terms = jax.jit(lambda x, k: vaejax.elbo(encoder, x, k, num_samples=20_000))(
        x, jax.random.key(7))
    assert abs(float(terms.elbo - model.log_marginal(x))) < tol(2e-2, 2e-2)


def test_best_diagonal_posterior_falls_short_by_the_mean_field_gap(model, data, tol):
  precision = numpy_precision(model)
  gap = 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])
  assert gap > 0.05
  np.testing.assert_allclose(model.mean_field_gap(), gap, rtol=tol(1e-4, 1e-10))
  encoder = Encoder(model, model.best_diagonal_posterior)
  for i, x in enumerate(data[:2]):
    log_marginal = float(model.log_marginal(x))
    # Closed form: the KL from the best diagonal q to the exact posterior.
    kl = vaejax.kl_divergence(model.best_diagonal_posterior(x), model.posterior(x))
    np.testing.assert_allclose(kl, gap, rtol=tol(1e-4, 1e-10))
    # Monte Carlo: the mean of single-draw ELBOs, within 5 standard errors.
    keys = jax.random.split(jax.random.key(i), 20_000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: vaejax.elbo(
        encoder, x, k, analytic_kl=False).elbo))(keys), np.float64)
    standard_error = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - (log_marginal - gap)) < 5 * standard_error
    assert log_marginal - draws.mean() > 10 * standard_error


class WithPrior:
  """z ~ N(m0, diag(v0)), x | z ~ N(W z + b, s^2 I): a linear-Gaussian model
  with a diagonal prior, and its exact posterior as the encoder."""

  def __init__(self, model, prior_mean, prior_log_var):
    self.model, self.prior_mean, self.prior_log_var = model, prior_mean, prior_log_var

  def prior(self):
    return vaejax.DiagonalGaussian(self.prior_mean, self.prior_log_var)

  def encode(self, x):
    # Bayes' rule: precision diag(1/v0) + W^T W / s^2, mean by a solve.
    w, noise_var = self.model.weight, jnp.exp(self.model.log_var)
    precision = jnp.diag(jnp.exp(-self.prior_log_var)) + w.T @ w / noise_var
    cov = jnp.linalg.inv(precision)  # a reference model: clarity over speed
    mean = cov @ (w.T @ (x - self.model.bias) / noise_var
                  + self.prior_mean * jnp.exp(-self.prior_log_var))
    return vaejax.FullCovarianceGaussian(mean, jnp.linalg.cholesky(cov))

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


def test_a_models_own_prior_enters_the_bound(model, data, tol):
  prior_mean = jnp.asarray([0.5, -1.0, 2.0], model.weight.dtype)
  prior_log_var = jnp.asarray([0.3, -0.5, 1.0], model.weight.dtype)
  with_prior = WithPrior(model, prior_mean, prior_log_var)
  weight = np.asarray(model.weight, np.float64)
  marginal = stats.multivariate_normal(
      weight @ np.asarray(prior_mean, np.float64) + np.asarray(model.bias, np.float64),
      weight @ np.diag(np.exp(np.asarray(prior_log_var, np.float64))) @ weight.T
      + np.exp(float(model.log_var)) * np.eye(DATA_DIM))
  for i, x in enumerate(data):
    log_weights = vaejax.log_importance_weights(with_prior, x, jax.random.key(i), 5)
    np.testing.assert_allclose(log_weights, np.full(5, marginal.logpdf(np.asarray(x))),
                               rtol=tol(1e-4, 1e-10))
  # Closed-form KL against the model's prior: the exact ELBO, on average.
  x = data[0]
  terms = jax.jit(lambda k: vaejax.elbo(with_prior, x, k, num_samples=20_000))(
      jax.random.key(3))
  assert abs(float(terms.elbo) - marginal.logpdf(np.asarray(x))) < 2e-2


def test_an_explicit_standard_normal_prior_changes_nothing(model, data):
  class Explicit(Encoder):
    def prior(self):
      return vaejax.StandardNormal(LATENT_DIM, model.weight.dtype)

  implicit, explicit = Encoder(model, model.encode), Explicit(model, model.encode)
  key = jax.random.key(0)
  for analytic_kl in (True, False):
    np.testing.assert_array_equal(
        vaejax.negative_elbo(explicit, data, key, num_samples=3, analytic_kl=analytic_kl)[0],
        vaejax.negative_elbo(implicit, data, key, num_samples=3, analytic_kl=analytic_kl)[0])
  # analytic_kl=None: the closed form, where there is one.
  np.testing.assert_array_equal(
      vaejax.negative_elbo(explicit, data, key, num_samples=3, analytic_kl=None)[0],
      vaejax.negative_elbo(explicit, data, key, num_samples=3, analytic_kl=True)[0])


def test_a_mixture_prior_needs_the_sampled_kl(model, data):
  class Mixture(Encoder):
    def prior(self):
      return vaejax.MixtureOfDiagonalGaussians.uniform(
          jnp.zeros((2, LATENT_DIM), model.weight.dtype) + jnp.asarray([[1.0], [-1.0]], model.weight.dtype),
          jnp.zeros((2, LATENT_DIM), model.weight.dtype))

  mixture = Mixture(model, model.posterior)
  with pytest.raises(TypeError, match=r'analytic_kl=True needs KL\(q \|\| p\) in closed '
                     'form.*FullCovarianceGaussian \\|\\| p MixtureOfDiagonalGaussians'):
    jax.jit(lambda x: vaejax.elbo(mixture, x, jax.random.key(0)))(data[0])
  loss, terms = jax.jit(lambda d: vaejax.negative_elbo(
      mixture, d, jax.random.key(0), analytic_kl=False))(data)
  # analytic_kl=None: the estimate here, where no closed form exists.
  auto, _ = jax.jit(lambda d: vaejax.negative_elbo(
      mixture, d, jax.random.key(0), analytic_kl=None))(data)
  np.testing.assert_array_equal(auto, loss)
  assert np.isfinite(loss) and np.all(terms.kl > 0)
  # The estimate's mean is KL(q || p), checked against the log-densities.
  x = data[0]
  q, p = model.posterior(x), mixture.prior()
  z = q.sample(jax.random.key(5), 50_000)
  log_ratios = jax.jit(lambda z: q.log_prob(z) - p.log_prob(z))(z)
  expected = float(jnp.mean(log_ratios))
  keys = jax.random.split(jax.random.key(6), 20_000)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: vaejax.elbo(
      mixture, x, k, analytic_kl=False).kl))(keys), np.float64)
  assert abs(draws.mean() - expected) < 5 * np.hypot(
      draws.std() / np.sqrt(len(draws)),
      float(jnp.std(log_ratios)) / np.sqrt(len(z)))


def test_generated_correlated_dataset_has_its_gap():
  model = data_lib.generating_model('linear_gaussian_correlated')
  assert float(model.mean_field_gap()) > 1.0
  assert float(data_lib.generating_model('linear_gaussian').mean_field_gap()) == 0.0
  dataset = data_lib.load('linear_gaussian_correlated')
  flat = dataset.test.reshape(len(dataset.test), -1)
  np.testing.assert_allclose(dataset.test_log_marginal,
                             jax.vmap(model.log_marginal)(flat), rtol=1e-6)
