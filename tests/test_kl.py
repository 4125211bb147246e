"""vaejax.kl against a float64 NumPy closed form, Monte Carlo, and properties."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from scipy import stats

import vaejax

pytestmark = pytest.mark.float64


def random_spd(rng, dim):
  """A random symmetric positive definite matrix, condition number ~ 10."""
  a = rng.normal(size=(dim, dim))
  return a @ a.T / dim + 0.3 * np.eye(dim)


def random_pair(seed, dim):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=dim), random_spd(rng, dim),
          rng.normal(size=dim), random_spd(rng, dim))


def numpy_kl(mean_p, cov_p, mean_q, cov_q):
  """The closed form with an explicit inverse and slogdet, in float64."""
  inv_q = np.linalg.inv(cov_q)
  diff = mean_q - mean_p
  _, log_det_p = np.linalg.slogdet(cov_p)
  _, log_det_q = np.linalg.slogdet(cov_q)
  return 0.5 * (np.trace(inv_q @ cov_p) + diff @ inv_q @ diff - len(mean_p)
                + log_det_q - log_det_p)


def as_jax(dtype, *arrays):
  return [jnp.asarray(a, dtype) for a in arrays]


@pytest.mark.jax_defaults
@pytest.mark.parametrize('dim', [1, 2, 5, 16, 64])
@pytest.mark.parametrize('seed', [0, 1])
def test_gaussian_kl_matches_numpy_closed_form(dim, seed, dtype, tol):
  args = random_pair(seed, dim)
  expected = numpy_kl(*args)
  got = vaejax.gaussian_kl(*as_jax(dtype, *args))
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=tol(2e-4, 1e-10))


@pytest.mark.parametrize('dim', [1, 3, 10])
def test_gaussian_kl_matches_monte_carlo(dim, dtype):
  # KL(P||Q) = E_P[log p(x) - log q(x)]: 200,000 draws from P, scored by scipy.
  mean_p, cov_p, mean_q, cov_q = random_pair(dim, dim)
  rng = np.random.default_rng(123)
  x = rng.multivariate_normal(mean_p, cov_p, size=200_000)
  log_ratio = (stats.multivariate_normal(mean_p, cov_p).logpdf(x)
               - stats.multivariate_normal(mean_q, cov_q).logpdf(x))
  standard_error = log_ratio.std() / np.sqrt(len(log_ratio))
  got = vaejax.gaussian_kl(*as_jax(dtype, mean_p, cov_p, mean_q, cov_q))
  assert abs(float(got) - log_ratio.mean()) < 5 * standard_error


@pytest.mark.parametrize('dim', [1, 4, 32])
def test_kl_of_a_distribution_with_itself_is_zero(dim, dtype, tol):
  mean, cov, _, _ = random_pair(3, dim)
  mean, cov = as_jax(dtype, mean, cov)
  assert abs(vaejax.gaussian_kl(mean, cov, mean, cov)) < tol(1e-4, 1e-12)
  scale_tril = jnp.linalg.cholesky(cov)
  assert abs(vaejax.gaussian_kl_tril(mean, scale_tril, mean, scale_tril)) < tol(
      1e-4, 1e-12)
  log_var = jnp.log(jnp.diagonal(cov))
  assert vaejax.diag_gaussian_kl(mean, log_var, mean, log_var) == 0.0


def test_kl_is_nonnegative(dtype):
  for seed in range(20):
    args = as_jax(dtype, *random_pair(seed, 6))
    assert vaejax.gaussian_kl(*args) > 0
    assert vaejax.gaussian_kl(args[2], args[3], args[0], args[1]) > 0


def test_kl_is_asymmetric(dtype, tol):
  # P = N(0, 1), Q = N(0, 4), by hand: KL(P||Q) = 1/2 (1/4 - 1 + log 4) and
  # KL(Q||P) = 1/2 (4 - 1 - log 4).
  zero, one, four = (jnp.full(shape, v, dtype) for shape, v in
                     (((1,), 0.0), ((1, 1), 1.0), ((1, 1), 4.0)))
  np.testing.assert_allclose(vaejax.gaussian_kl(zero, one, zero, four),
                             0.5 * (0.25 - 1 + np.log(4)), rtol=tol(1e-6, 1e-14))
  np.testing.assert_allclose(vaejax.gaussian_kl(zero, four, zero, one),
                             0.5 * (4 - 1 - np.log(4)), rtol=tol(1e-6, 1e-14))


def test_tril_form_equals_covariance_form(dtype, tol):
  mean_p, cov_p, mean_q, cov_q = as_jax(dtype, *random_pair(7, 8))
  tril_p = jnp.linalg.cholesky(cov_p)
  tril_q = jnp.linalg.cholesky(cov_q)
  expected = vaejax.gaussian_kl(mean_p, cov_p, mean_q, cov_q)
  np.testing.assert_allclose(
      vaejax.gaussian_kl_tril(mean_p, tril_p, mean_q, tril_q), expected,
      rtol=tol(1e-5, 1e-12))
  # Any factor L with L L^T = S will do: flip the signs of some columns.
  signs = jnp.asarray([1, -1, 1, 1, -1, -1, 1, -1], dtype)
  np.testing.assert_allclose(
      vaejax.gaussian_kl_tril(mean_p, tril_p * signs[None], mean_q,
                              tril_q * signs[::-1][None]),
      expected, rtol=tol(1e-5, 1e-12))
  # Entries above the diagonal are not read.
  junk = jnp.triu(jnp.ones_like(tril_p), k=1)
  np.testing.assert_allclose(
      vaejax.gaussian_kl_tril(mean_p, tril_p + junk, mean_q, tril_q + junk),
      expected, rtol=tol(1e-5, 1e-12))


@pytest.mark.jax_defaults
@pytest.mark.parametrize('dim', [1, 5, 20])
def test_diagonal_forms_equal_full_covariance_form(dim, dtype, tol):
  rng = np.random.default_rng(dim)
  mean_p, mean_q = rng.normal(size=(2, dim))
  log_var_p, log_var_q = rng.uniform(-3, 3, size=(2, dim))
  mean_p, mean_q, log_var_p, log_var_q = as_jax(
      dtype, mean_p, mean_q, log_var_p, log_var_q)
  full = vaejax.gaussian_kl(mean_p, jnp.diag(jnp.exp(log_var_p)),
                            mean_q, jnp.diag(jnp.exp(log_var_q)))
  np.testing.assert_allclose(
      vaejax.diag_gaussian_kl(mean_p, log_var_p, mean_q, log_var_q), full,
      rtol=tol(1e-5, 1e-12))
  # A standard-normal Q.
  zeros = jnp.zeros(dim, dtype)
  full = vaejax.gaussian_kl(mean_p, jnp.diag(jnp.exp(log_var_p)),
                            zeros, jnp.eye(dim, dtype=dtype))
  diag = vaejax.diag_gaussian_kl(mean_p, log_var_p, zeros, zeros)
  standard = vaejax.standard_normal_kl(mean_p, log_var_p)
  np.testing.assert_allclose(diag, full, rtol=tol(1e-5, 1e-12))
  np.testing.assert_allclose(standard, full, rtol=tol(1e-5, 1e-12))


def test_standard_normal_kl_matches_formula_in_float64(dtype, tol):
  rng = np.random.default_rng(0)
  mean = rng.normal(size=50) * 3
  log_var = rng.uniform(-10, 10, size=50)
  expected = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var)
  np.testing.assert_allclose(
      vaejax.standard_normal_kl(*as_jax(dtype, mean, log_var)), expected,
      rtol=tol(1e-6, 1e-13))


def test_standard_normal_kl_is_exactly_zero_at_the_prior(dtype):
  zeros = jnp.zeros(16, dtype)
  assert vaejax.standard_normal_kl(zeros, zeros) == 0.0
  assert vaejax.diag_gaussian_kl(zeros, zeros, zeros, zeros) == 0.0


def test_kl_is_accurate_near_zero(dtype, tol):
  # Collapsed latent dimensions have KL ~ 1e-7 nats. exp(v) - 1 - v has an
  # absolute error of ~eps (1e-7 in float32, all of the value); expm1(v) - v
  # of ~eps |v| (1e-10 here).
  log_var = jnp.asarray([1e-3, -2e-3, 5e-4, -1e-4], dtype)
  mean = jnp.asarray([1e-4, 0.0, -3e-4, 2e-4], dtype)
  v = np.asarray(log_var, np.float64)
  m = np.asarray(mean, np.float64)
  expected = 0.5 * (np.expm1(v) - v + m**2)
  per_dim = jax.vmap(lambda m, v: vaejax.standard_normal_kl(m[None], v[None]))
  atol = tol(1e-9, 1e-17)
  np.testing.assert_allclose(per_dim(mean, log_var), expected, rtol=0, atol=atol)
  per_dim = jax.vmap(lambda m, v: vaejax.diag_gaussian_kl(
      m[None], v[None], 0 * m[None], 0 * v[None]))
  np.testing.assert_allclose(per_dim(mean, log_var), expected, rtol=0, atol=atol)


def test_standard_normal_kl_extremes_are_finite_in_float32():
  # Each log_var in [-80, 80] on its own, value and gradient, against float64.
  log_var = jnp.linspace(-80.0, 80.0, 321, dtype=jnp.float32)
  mean = jnp.zeros_like(log_var)
  per_dim = jax.vmap(lambda m, v: vaejax.standard_normal_kl(m[None], v[None]))
  values = per_dim(mean, log_var)
  grad_mean, grad_log_var = jax.vmap(
      jax.grad(lambda m, v: vaejax.standard_normal_kl(m[None], v[None]),
               argnums=(0, 1)))(mean, log_var)
  assert jnp.all(jnp.isfinite(values))
  assert jnp.all(jnp.isfinite(grad_mean)) and jnp.all(jnp.isfinite(grad_log_var))
  v64 = np.asarray(log_var, np.float64)
  np.testing.assert_allclose(values, 0.5 * (np.expm1(v64) - v64), rtol=1e-6)
  np.testing.assert_allclose(grad_log_var, 0.5 * np.expm1(v64), rtol=1e-6)
  # All at once: the sum of 321 terms is still finite.
  assert jnp.isfinite(vaejax.standard_normal_kl(mean, log_var))
  assert jnp.all(jnp.isfinite(
      jax.grad(vaejax.standard_normal_kl, argnums=1)(mean, log_var)))


def test_diag_gaussian_kl_extremes_are_finite_in_float32():
  grid = jnp.linspace(-40.0, 40.0, 81, dtype=jnp.float32)
  log_var_p, log_var_q = [a.ravel() for a in jnp.meshgrid(grid, grid)]
  mean = jnp.ones_like(log_var_p)
  one_pair = lambda mp, vp, mq, vq: vaejax.diag_gaussian_kl(
      mp[None], vp[None], mq[None], vq[None])
  values = jax.vmap(one_pair)(mean, log_var_p, -mean, log_var_q)
  grads = jax.vmap(jax.grad(one_pair, argnums=(0, 1, 2, 3)))(
      mean, log_var_p, -mean, log_var_q)
  assert jnp.all(jnp.isfinite(values)) and jnp.all(values >= 0)
  for g in grads:
    assert jnp.all(jnp.isfinite(g))


def _spd_from_factor(a):
  return a @ a.T + jnp.eye(a.shape[0], dtype=a.dtype)


def test_gradients_by_finite_differences(dtype):
  if dtype != jnp.float64:
    pytest.skip('finite differences need float64')
  mean_p, _, mean_q, _ = as_jax(dtype, *random_pair(0, 4))
  rng = np.random.default_rng(1)
  a_p, a_q = as_jax(dtype, *rng.normal(size=(2, 4, 4)))
  log_var_p, log_var_q = as_jax(dtype, *rng.uniform(-1, 1, size=(2, 4)))
  kwargs = dict(order=2, modes=['rev'], eps=1e-5)
  # Covariances through S = A A^T + I, so that perturbations stay symmetric.
  check_grads(
      jax.jit(lambda mp, ap, mq, aq: vaejax.gaussian_kl(
          mp, _spd_from_factor(ap), mq, _spd_from_factor(aq))),
      (mean_p, a_p, mean_q, a_q), **kwargs)
  check_grads(
      jax.jit(lambda mp, ap, mq, aq: vaejax.gaussian_kl_tril(
          mp, jnp.tril(ap) + 3 * jnp.eye(4, dtype=dtype), mq,
          jnp.tril(aq) + 3 * jnp.eye(4, dtype=dtype))),
      (mean_p, a_p, mean_q, a_q), **kwargs)
  check_grads(jax.jit(vaejax.diag_gaussian_kl), (mean_p, log_var_p, mean_q, log_var_q),
              **kwargs)
  check_grads(jax.jit(vaejax.standard_normal_kl), (mean_p, log_var_p), **kwargs)


def test_jit_equals_eager_and_vmap_equals_loop(dtype, tol):
  pairs = [as_jax(dtype, *random_pair(seed, 5)) for seed in range(4)]
  stacked = [jnp.stack(column) for column in zip(*pairs)]
  eager = [vaejax.gaussian_kl(*pair) for pair in pairs]
  jitted = [jax.jit(vaejax.gaussian_kl)(*pair) for pair in pairs]
  batched = jax.jit(jax.vmap(vaejax.gaussian_kl))(*stacked)
  np.testing.assert_allclose(jitted, eager, rtol=tol(1e-6, 1e-13))
  np.testing.assert_allclose(batched, eager, rtol=tol(1e-6, 1e-13))

  mean = stacked[0]
  log_var = jnp.log(jax.vmap(jnp.diagonal)(stacked[1]))
  eager = [vaejax.standard_normal_kl(m, v) for m, v in zip(mean, log_var)]
  batched = jax.jit(jax.vmap(vaejax.standard_normal_kl))(mean, log_var)
  np.testing.assert_allclose(batched, eager, rtol=tol(1e-6, 1e-13))
  eager = [vaejax.diag_gaussian_kl(m, v, m[::-1], v[::-1])
           for m, v in zip(mean, log_var)]
  batched = jax.jit(jax.vmap(
      lambda m, v: vaejax.diag_gaussian_kl(m, v, m[::-1], v[::-1])))(
          mean, log_var)
  np.testing.assert_allclose(batched, eager, rtol=tol(1e-6, 1e-13))
