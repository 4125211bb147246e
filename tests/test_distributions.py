"""vaejax.distributions: densities, draws and every closed-form KL, in float64.

References are written from the formulas, independently of the
implementation: covariances formed explicitly, NumPy inverses and slogdets,
scipy's densities.
"""

import itertools

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from scipy import special
from scipy import stats

import vaejax
from vaejax import distributions as dist

pytestmark = pytest.mark.float64

DIM = 4


def random_of(kind, seed, dtype, dim=DIM):
  """A random distribution of `kind` and its (mean, covariance) in float64."""
  rng = np.random.default_rng(seed)
  if kind == 'standard':
    return dist.StandardNormal(dim, dtype), (np.zeros(dim), np.eye(dim))
  mean = rng.normal(size=dim)
  if kind == 'diagonal':
    log_var = rng.normal(size=dim)
    return (dist.DiagonalGaussian(jnp.asarray(mean, dtype), jnp.asarray(log_var, dtype)),
            (mean, np.diag(np.exp(log_var))))
  scale_tril = np.tril(rng.normal(size=(dim, dim)), -1) + np.diag(
      np.exp(0.3 * rng.normal(size=dim)))
  return (dist.FullCovarianceGaussian(jnp.asarray(mean, dtype),
                                      jnp.asarray(scale_tril, dtype)),
          (mean, scale_tril @ scale_tril.T))


def numpy_kl(p, q):
  """KL(P||Q) = 1/2 [tr(S_Q^-1 S_P) + (m_Q-m_P)^T S_Q^-1 (m_Q-m_P) - d + log det S_Q - log det S_P]."""
  (mean_p, cov_p), (mean_q, cov_q) = p, q
  inv_q = np.linalg.inv(cov_q)
  diff = mean_q - mean_p
  return 0.5 * (np.trace(inv_q @ cov_p) + diff @ inv_q @ diff - len(mean_p)
                + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1])


KINDS = ('standard', 'diagonal', 'full')
PAIRS = list(itertools.product(KINDS, KINDS))


@pytest.mark.parametrize('kind_p, kind_q', PAIRS)
def test_kl_divergence_of_every_pair_is_the_closed_form(kind_p, kind_q, dtype, tol):
  for seed in range(3):
    p, p_moments = random_of(kind_p, seed, dtype)
    q, q_moments = random_of(kind_q, seed + 100, dtype)
    got = jax.jit(vaejax.kl_divergence)(p, q)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, numpy_kl(p_moments, q_moments),
                               rtol=tol(1e-4, 1e-11), atol=tol(1e-5, 1e-12))


@pytest.mark.parametrize('kind', KINDS)
def test_kl_of_a_distribution_with_itself_is_zero(kind, dtype, tol):
  p, _ = random_of(kind, 7, dtype)
  assert abs(float(vaejax.kl_divergence(p, p))) < tol(1e-5, 1e-12)


@pytest.mark.parametrize('kind_p, kind_q', [
    (p, q) for p, q in PAIRS if 'standard' not in (p, q) or p != q])
def test_kl_divergence_gradients(kind_p, kind_q, dtype):
  if dtype != jnp.float64:
    pytest.skip('finite differences need float64')
  p, _ = random_of(kind_p, 3, dtype)
  q, _ = random_of(kind_q, 4, dtype)
  check_grads(vaejax.kl_divergence, (p, q), order=2, modes=('rev',),
              atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', KINDS)
def test_log_prob_is_scipys_and_noise_log_prob_agrees(kind, dtype, tol):
  d, (mean, cov) = random_of(kind, 11, dtype)
  z, eps = d.sample_and_noise(jax.random.key(0), 50)
  assert z.shape == eps.shape == (50, DIM) and z.dtype == dtype
  expected = stats.multivariate_normal(mean, cov).logpdf(np.asarray(z, np.float64))
  np.testing.assert_allclose(d.log_prob(z), expected, rtol=tol(1e-5, 1e-12))
  np.testing.assert_allclose(d.noise_log_prob(eps), expected, rtol=tol(1e-5, 1e-12))
  # One draw at a time, the same values.
  np.testing.assert_allclose(jax.vmap(d.log_prob)(z), d.log_prob(z), rtol=1e-6)


@pytest.mark.parametrize('kind', KINDS)
def test_draws_have_the_distributions_moments(kind, dtype):
  d, (mean, cov) = random_of(kind, 5, dtype)
  n = 200_000
  z = np.asarray(d.sample(jax.random.key(1), n), np.float64)
  # 5 standard errors of each mean and covariance entry.
  np.testing.assert_array_less(np.abs(z.mean(0) - mean),
                               5 * np.sqrt(np.diag(cov) / n))
  var_of_cov = (np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n
  np.testing.assert_array_less(np.abs(np.cov(z.T) - cov), 5 * np.sqrt(var_of_cov))


def test_diagonal_draws_are_reparameterizes_and_keep_their_prefix():
  d, _ = random_of('diagonal', 2, jnp.float32)
  key = jax.random.key(9)
  for num_samples in (None, 7):
    np.testing.assert_array_equal(
        d.sample(key, num_samples),
        vaejax.reparameterize(key, d.mean, d.log_var, num_samples))
  # A full-covariance Gaussian padded with independent N(0, 1) dimensions
  # draws the unpadded one's z in its first dimensions.
  f, _ = random_of('full', 2, jnp.float32)
  padded = dist.FullCovarianceGaussian(
      jnp.concatenate([f.mean, jnp.zeros(3, f.mean.dtype)]),
      jax.scipy.linalg.block_diag(f.scale_tril, jnp.eye(3, dtype=f.mean.dtype)))
  np.testing.assert_allclose(padded.sample(key, 7)[:, :DIM], f.sample(key, 7),
                             rtol=1e-6, atol=1e-6)


def test_mixture_log_prob_and_draws(dtype, tol):
  rng = np.random.default_rng(0)
  means, log_vars = rng.normal(size=(5, DIM)), 0.5 * rng.normal(size=(5, DIM))
  logits = rng.normal(size=5)
  mixture = dist.MixtureOfDiagonalGaussians(*(jnp.asarray(a, dtype) for a in (
      means, log_vars, logits)))
  z = rng.normal(size=(20, DIM))
  weights = special.softmax(logits)
  expected = np.log(sum(w * stats.multivariate_normal(m, np.diag(np.exp(v))).pdf(z)
                        for w, m, v in zip(weights, means, log_vars)))
  np.testing.assert_allclose(mixture.log_prob(jnp.asarray(z, dtype)), expected,
                             rtol=tol(1e-5, 1e-12))
  np.testing.assert_allclose(mixture.mean, weights @ means, rtol=tol(1e-5, 1e-12))
  draws = np.asarray(mixture.sample(jax.random.key(3), 100_000), np.float64)
  second_moment = weights @ (np.exp(log_vars) + means ** 2)
  np.testing.assert_array_less(np.abs(draws.mean(0) - weights @ means),
                               5 * np.sqrt(second_moment / len(draws)))
  uniform = dist.MixtureOfDiagonalGaussians.uniform(mixture.means, mixture.log_vars)
  np.testing.assert_allclose(jax.nn.softmax(uniform.logits), np.full(5, 0.2))


def test_distributions_are_pytrees_for_jit_and_vmap():
  batch = 6
  rng = np.random.default_rng(1)
  ps = dist.DiagonalGaussian(jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32),
                             jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32))
  tril = np.tril(rng.normal(size=(batch, DIM, DIM)), -1) + np.eye(DIM)
  qs = dist.FullCovarianceGaussian(jnp.asarray(rng.normal(size=(batch, DIM)), jnp.float32),
                                   jnp.asarray(tril, jnp.float32))
  batched = jax.jit(jax.vmap(vaejax.kl_divergence))(ps, qs)
  looped = [vaejax.kl_divergence(jax.tree.map(lambda a: a[i], ps),
                                 jax.tree.map(lambda a: a[i], qs)) for i in range(batch)]
  np.testing.assert_allclose(batched, looped, rtol=1e-5)
  # Returned from jit, and the static dimension of N(0, I) survives it.
  prior = jax.jit(lambda: dist.StandardNormal(DIM))()
  assert prior.dim == DIM and jax.tree.leaves(prior) == []


def test_pairs_without_a_closed_form_and_mismatched_sizes_say_so():
  d, _ = random_of('diagonal', 0, jnp.float32)
  mixture = dist.MixtureOfDiagonalGaussians.uniform(jnp.zeros((3, DIM)),
                                                    jnp.zeros((3, DIM)))
  with pytest.raises(TypeError, match='no closed form for DiagonalGaussian '
                     r'\|\| MixtureOfDiagonalGaussians'):
    vaejax.kl_divergence(d, mixture)
  with pytest.raises(ValueError, match='over 4 dimensions, q a StandardNormal over 5'):
    vaejax.kl_divergence(d, dist.StandardNormal(5))
  batch = dist.DiagonalGaussian(jnp.zeros((2, DIM)), jnp.zeros((2, DIM)))
  with pytest.raises(ValueError, match='takes one example.*use jax.vmap'):
    vaejax.kl_divergence(batch, dist.StandardNormal(DIM))
  with pytest.raises(ValueError, match=r'takes z \[\.\.\., 4\]'):
    d.log_prob(jnp.zeros(5))


def _matmul_precisions(closed_jaxpr):
  """The precision of every dot_general in a jaxpr, sub-jaxprs included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append(eqn.params['precision'])
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(closed_jaxpr.jaxpr)
  return found


def test_the_formulas_multiply_at_highest_precision_whatever_the_default():
  # A GPU's default float32 product is TF32 and a TPU's bfloat16: under such
  # a default a network's products follow it, the distributions' do not.
  highest = (jax.lax.Precision.HIGHEST,) * 2
  full, _ = random_of('full', 3, jnp.float32)
  diagonal, _ = random_of('diagonal', 4, jnp.float32)
  mixture = dist.MixtureOfDiagonalGaussians.uniform(jnp.zeros((3, DIM)),
                                                    jnp.zeros((3, DIM)))
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, DIM, correlation=0.5)
  x, z = jnp.ones(6), jnp.ones(DIM)
  formulas = {
      'full sample': lambda: full.sample_and_noise(jax.random.key(0), 2),
      'full log_prob': lambda: full.log_prob(z),
      'kl full||full': lambda: vaejax.kl_divergence(full, full),
      'kl diagonal||full': lambda: vaejax.kl_divergence(diagonal, full),
      'gaussian_kl_tril': lambda: vaejax.gaussian_kl_tril(
          full.mean, full.scale_tril, z, full.scale_tril),
      'mixture mean': lambda: mixture.mean,
      'linear-Gaussian posterior': lambda: model.posterior(x),
      'linear-Gaussian log p(x)': lambda: model.log_marginal(x),
      'linear-Gaussian sample': lambda: model.sample(jax.random.key(0), 2),
      'linear-Gaussian model': lambda: vaejax.make_linear_gaussian(
          jax.random.key(0), 6, DIM, correlation=0.5),
  }
  with jax.default_matmul_precision('bfloat16'):
    plain = _matmul_precisions(jax.make_jaxpr(lambda: x[:DIM] @ full.scale_tril)())
    assert plain and plain[0] != highest  # what the walk would see if unwrapped
    found = {name: _matmul_precisions(jax.make_jaxpr(formula)())
             for name, formula in formulas.items()}
  # The KLs and log_prob are solves and sums today; these hold products.
  for name in ('full sample', 'mixture mean', 'linear-Gaussian posterior',
               'linear-Gaussian log p(x)', 'linear-Gaussian sample'):
    assert found[name], name
  for name, precisions in found.items():
    assert all(p == highest for p in precisions), (name, precisions)
