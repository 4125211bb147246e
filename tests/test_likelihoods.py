"""vaejax.likelihoods against scipy and hand-derived values at the extremes."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from scipy import special
from scipy import stats

import vaejax

pytestmark = pytest.mark.float64


def test_bernoulli_matches_scipy(dtype, tol):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=784) * 5
  x = rng.integers(0, 2, size=784)
  expected = stats.bernoulli(special.expit(logits)).logpmf(x).sum()
  got = vaejax.bernoulli_log_prob(jnp.asarray(logits, dtype), x)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=tol(1e-5, 1e-12))


def test_bernoulli_of_grey_levels_is_negative_cross_entropy(dtype, tol):
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(28, 28)) * 4
  x = rng.uniform(size=(28, 28))
  p = special.expit(logits)
  expected = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p))
  np.testing.assert_allclose(
      vaejax.bernoulli_log_prob(jnp.asarray(logits, dtype), jnp.asarray(x, dtype)),
      expected, rtol=tol(1e-5, 1e-12))


@pytest.mark.parametrize('logit', [88.0, 100.0, 1e4, -88.0, -100.0, -1e4])
def test_bernoulli_is_finite_and_exact_at_huge_logits(logit, dtype):
  # log p(x=1) = log sigmoid(l) = -log(1 + e^-l), log p(x=0) = log sigmoid(-l):
  # about min(l, 0) and min(-l, 0), off by less than e^-88 ~ 1e-38.
  logits = jnp.full((3,), logit, dtype)
  for pixel in (0, 1):
    x = jnp.full((3,), pixel, jnp.uint8)
    expected = -3 * np.logaddexp(0.0, -logit if pixel else logit)
    got = vaejax.bernoulli_log_prob(logits, x)
    assert jnp.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-30)
    grad = jax.grad(vaejax.bernoulli_log_prob)(logits, x)
    assert jnp.all(jnp.isfinite(grad))
    # d/dl = x - sigmoid(l), which is 0 or +-1 here.
    np.testing.assert_allclose(grad, pixel - float(logit > 0), atol=1e-30)


@pytest.mark.parametrize('pixel', [0, 1])
def test_bernoulli_keeps_its_relative_accuracy_in_both_tails(pixel, dtype, tol):
  # log p(x) = -log(1 + e^-s), s = l (x = 1) or -l (x = 0): about -e^-s when
  # s is large, which a cancelling form loses (0.8% off at s = 10 in
  # float32, and 0 from s = 17). Reference: float64 log1p of exp.
  signed = np.array([5.0, 10.0, 17.0, 30.0, 60.0])
  logits = signed if pixel else -signed
  expected = -np.log1p(np.exp(-signed))
  for logit, want in zip(logits, expected):
    got = vaejax.bernoulli_log_prob(jnp.asarray([logit], dtype),
                                    jnp.asarray([pixel], jnp.uint8))
    assert got < 0
    np.testing.assert_allclose(got, want, rtol=tol(1e-6, 1e-14))


def test_a_log_of_sigmoid_form_fails_where_ours_does_not():
  # log(1 - sigmoid(l)) is log(0) = -inf once sigmoid(l) rounds to 1 in float32,
  # and 0 * -inf is NaN: the reason for log_sigmoid.
  # The naive form in NumPy: how XLA evaluates it varies by platform (on a
  # GPU it can stay finite), the rounding of sigmoid(l) to 1 does not.
  logits = np.asarray([88.0, 1e4], np.float32)
  x = np.ones(2, np.float32)
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    sigmoid = 1 / (1 + np.exp(-logits))
    naive = np.sum(x * np.log(sigmoid) + (1 - x) * np.log(1 - sigmoid))
  assert np.isnan(naive)
  # Ours is log sigmoid(88) + log sigmoid(1e4) = -exp(-88) - 0, a float32
  # subnormal, which a CPU flushes to zero and a GPU keeps.
  ours = vaejax.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x))
  np.testing.assert_allclose(ours, -np.exp(-88.0), rtol=0, atol=1e-38)


@pytest.mark.parametrize('dim', [1, 7, 784])
def test_gaussian_matches_scipy(dim, dtype, tol):
  rng = np.random.default_rng(dim)
  mean = rng.normal(size=dim)
  log_var = rng.uniform(-4, 2, size=dim)
  x = mean + rng.normal(size=dim) * np.exp(0.5 * log_var) * 1.5
  expected = stats.multivariate_normal(mean, np.diag(np.exp(log_var))).logpdf(x)
  got = vaejax.gaussian_log_prob(jnp.asarray(mean, dtype),
                                 jnp.asarray(log_var, dtype),
                                 jnp.asarray(x, dtype))
  assert got.dtype == dtype
  np.testing.assert_allclose(got, expected, rtol=tol(1e-5, 1e-12))


def test_gaussian_with_one_shared_variance(dtype, tol):
  rng = np.random.default_rng(3)
  mean, x = rng.normal(size=(2, 4, 5))  # any shape, e.g. an image
  expected = stats.norm(mean, np.exp(0.5 * -1.3)).logpdf(x).sum()
  got = vaejax.gaussian_log_prob(jnp.asarray(mean, dtype),
                                 jnp.asarray(-1.3, dtype),
                                 jnp.asarray(x, dtype))
  np.testing.assert_allclose(got, expected, rtol=tol(1e-5, 1e-12))


def test_gradients_by_finite_differences(dtype):
  rng = np.random.default_rng(4)
  logits, mean, log_var, x = (
      jnp.asarray(a, dtype) for a in rng.normal(size=(4, 6)))
  eps = 1e-2 if dtype == jnp.float32 else 1e-5
  check_grads(jax.jit(lambda l: vaejax.bernoulli_log_prob(l, x > 0)),
              (logits,), order=2, eps=eps)
  check_grads(jax.jit(lambda m, v: vaejax.gaussian_log_prob(m, v, x)),
              (mean, log_var), order=2, eps=eps)


def test_vmap_equals_loop(dtype, tol):
  rng = np.random.default_rng(5)
  logits, mean, log_var, x = (
      jnp.asarray(a, dtype) for a in rng.normal(size=(4, 3, 10)))
  bits = x > 0
  batched = jax.jit(jax.vmap(vaejax.bernoulli_log_prob))(logits, bits)
  loop = [vaejax.bernoulli_log_prob(l, b) for l, b in zip(logits, bits)]
  np.testing.assert_allclose(batched, loop, rtol=tol(1e-6, 1e-13))
  batched = jax.jit(jax.vmap(vaejax.gaussian_log_prob))(mean, log_var, x)
  loop = [vaejax.gaussian_log_prob(*a) for a in zip(mean, log_var, x)]
  np.testing.assert_allclose(batched, loop, rtol=tol(1e-6, 1e-13))


@pytest.mark.jax_defaults
@pytest.mark.parametrize('function, name', [
    (lambda out, x: vaejax.gaussian_log_prob(out, jnp.zeros(()), x), 'mean'),
    (vaejax.bernoulli_log_prob, 'logits')])
@pytest.mark.parametrize('out_shape, x_shape', [
    ((28, 28, 1), (784,)), ((784,), (28, 28, 1)), ((784,), (1,)), ((4,), ())])
def test_data_of_another_shape_than_the_output_is_refused(function, name,
                                                          out_shape, x_shape):
  # At JAX's default rank promotion, which broadcasts: a mean [28, 28, 1]
  # against x [784] summed a [28, 28, 784] array (-564,831 nats where the
  # density is about -720), and flattening hid a one-pixel x.
  with pytest.raises(ValueError, match=(
      rf'x is \[{", ".join(map(str, x_shape))}\] and {name} '
      rf'\[{", ".join(map(str, out_shape))}\]; expected the same shape')):
    function(jnp.zeros(out_shape), jnp.zeros(x_shape))


@pytest.mark.jax_defaults
def test_a_log_variance_of_another_shape_is_refused():
  vaejax.gaussian_log_prob(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
  vaejax.gaussian_log_prob(jnp.zeros(3), jnp.zeros(()), jnp.zeros(3))
  with pytest.raises(ValueError, match=r'log_var is \[1\] and mean \[3\]; '
                     'expected \[3\] or a scalar'):
    vaejax.gaussian_log_prob(jnp.zeros(3), jnp.zeros(1), jnp.zeros(3))
