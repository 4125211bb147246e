"""The ELBO of models with two stochastic layers, on an exact linear chain.

z_2 -> z_1 -> x, all linear-Gaussian (`LinearGaussianChain`): log p(x) is
computed here in NumPy from the parameters, and the exact posterior
p(z_1|x) p(z_2|z_1) as the inference chain makes every log importance
weight equal to it. Any other posterior lies below. A two-layer model whose
top layer is inert is the one-layer model, draw for draw.
"""

import dataclasses

import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vaejax
from vaejax import distributions as dist
from vaejax import evaluation
from vaejax import linear_gaussian as lg

pytestmark = pytest.mark.float64

DATA_DIM, LATENT_DIMS = 8, (4, 2)


@pytest.fixture
def model(dtype):
  return jax.jit(lambda k: lg.make_linear_gaussian_chain(
      k, DATA_DIM, LATENT_DIMS, dtype=dtype))(jax.random.key(0))


@pytest.fixture
def data(model):
  return jax.jit(lambda k: model.sample(k, 4))(jax.random.key(1))


def numpy_log_marginal(model, x):
  """log N(x; W a + b, W (A A^T + tau^2 I) W^T + sigma^2 I), in float64."""
  w, b, a, a_bias = (np.asarray(v, np.float64) for v in (
      model.weight, model.bias, model.top_weight, model.top_bias))
  z1_cov = a @ a.T + np.exp(float(model.top_log_var)) * np.eye(LATENT_DIMS[0])
  cov = w @ z1_cov @ w.T + np.exp(float(model.log_var)) * np.eye(DATA_DIM)
  return stats.multivariate_normal(w @ a_bias + b, cov).logpdf(
      np.asarray(x, np.float64))


def test_the_exact_posterior_makes_every_weight_log_p_x(model, data, tol):
  weights = jax.jit(jax.vmap(lambda x, k: vaejax.log_importance_weights(
      model, x, k, 16)))(data, jax.random.split(jax.random.key(2), len(data)))
  expected = numpy_log_marginal(model, data)
  np.testing.assert_allclose(weights, np.repeat(expected[:, None], 16, 1),
                             rtol=tol(2e-5, 1e-11))
  np.testing.assert_allclose(jax.jit(jax.vmap(model.log_marginal))(data),
                             expected, rtol=tol(1e-5, 1e-12))
  # The sampled ELBO is log p(x) on every draw; with the top KL in closed
  # form it is unbiased, its mean over many draws log p(x).
  x = data[0]
  sampled = jax.jit(lambda k: vaejax.elbo(model, x, k, num_samples=8,
                                          analytic_kl=False))(jax.random.key(3))
  np.testing.assert_allclose(sampled.elbo, expected[0], rtol=tol(2e-5, 1e-11))
  analytic = jax.jit(lambda k: vaejax.elbo(model, x, k, num_samples=2000).elbo)(
      jax.random.key(4))
  np.testing.assert_allclose(analytic, expected[0], atol=0.05)


@dataclasses.dataclass
class DiagonalChain:
  """The chain with each posterior layer replaced by its diagonal."""
  exact: lg.LinearGaussianChain
  latent_layers = 2

  @staticmethod
  def _diagonal(full):
    return dist.DiagonalGaussian(
        full.mean, jnp.log(jnp.sum(jnp.square(full.scale_tril), axis=-1)))

  def encode(self, x):
    return self._diagonal(self.exact.encode(x))

  def encode_layer(self, layer, z1):
    return self._diagonal(self.exact.encode_layer(layer, z1))

  def prior_layer(self, layer, z2):
    return self.exact.prior_layer(layer, z2)

  def log_likelihood(self, x, z1):
    return self.exact.log_likelihood(x, z1)


def test_another_posterior_lies_below_log_p_x(model, data):
  chain = DiagonalChain(model)
  x = data[0]
  truth = numpy_log_marginal(model, x)
  weights = np.asarray(jax.jit(lambda k: vaejax.log_importance_weights(
      chain, x, k, 20_000))(jax.random.key(5)), np.float64)
  gap = truth - weights.mean()
  # E[log w] = log p(x) - KL(q || p(z_1, z_2 | x)) < log p(x): the mean lies
  # below by more than 5 standard errors, and the weights differ.
  assert gap > 5 * weights.std() / np.sqrt(len(weights)), gap
  assert weights.std() > 1e-3
  # The importance-weighted bound over the 20,000 draws is much closer (its
  # expectation lies below log p(x); one draw of it may not).
  bound = jax.scipy.special.logsumexp(weights) - np.log(len(weights))
  assert abs(bound - truth) < 0.2 * gap, (bound, truth, gap)


@pytest.mark.parametrize('chunk_size', [1, 3])
def test_the_iwae_chunk_size_changes_no_draw_of_any_layer(model, data, tol,
                                                          chunk_size):
  # Chunking K = 8 joint draws (z_1, z_2) changes none of them.
  whole, chunked = (jax.jit(evaluation.make_iwae(DiagonalChain, 8, size))(
      model, data, jax.random.key(2)) for size in (1 << 16, chunk_size))
  np.testing.assert_allclose(chunked, whole, rtol=tol(1e-5, 1e-12))


@dataclasses.dataclass
class InertTop:
  """A one-layer model with a second layer that changes nothing.

  q(z_2|z_1) = p(z_2) = N(0, I) and p(z_1|z_2) = N(0, I): the two-layer ELBO
  is the one-layer ELBO of `base` with the KL of z_1 estimated.
  """
  base: lg.LinearGaussian
  latent_layers = 2

  def encode(self, x):
    return self.base.encode(x)

  def encode_layer(self, layer, z1):
    return dist.DiagonalGaussian(jnp.zeros(3, z1.dtype), jnp.zeros(3, z1.dtype))

  def prior_layer(self, layer, z2):
    return dist.StandardNormal(self.base.weight.shape[1], z2.dtype)

  def log_likelihood(self, x, z1):
    return self.base.log_likelihood(x, z1)


def test_an_inert_top_layer_gives_the_one_layer_elbo(dtype, tol):
  base = vaejax.make_linear_gaussian(jax.random.key(0), DATA_DIM, 4,
                                     correlation=0.5, dtype=dtype)
  two = InertTop(base)
  x = base.sample(jax.random.key(1), 1)[0]
  key = jax.random.key(6)
  elbo = lambda m, analytic_kl: jax.jit(lambda k: vaejax.elbo_and_kl_per_layer(
      m, x, k, num_samples=5, analytic_kl=analytic_kl))(key)
  one_layer, one_layer_kls = elbo(base, False)
  np.testing.assert_array_equal(one_layer_kls, [one_layer.kl])
  for analytic_kl in (True, False):  # the top KL, closed form or sampled, is 0
    terms, kls = elbo(two, analytic_kl)
    for got, expected in zip(terms, one_layer):
      np.testing.assert_allclose(got, expected, rtol=tol(1e-5, 1e-12))
    np.testing.assert_allclose(kls, [one_layer.kl, 0],
                               rtol=tol(1e-5, 1e-12), atol=tol(1e-5, 1e-12))
    # The same draws as vaejax.elbo's.
    assert terms == jax.jit(lambda k: vaejax.elbo(
        two, x, k, num_samples=5, analytic_kl=analytic_kl))(key)
  weights = lambda m: jax.jit(lambda k: vaejax.log_importance_weights(m, x, k, 7))(key)
  np.testing.assert_allclose(weights(two), weights(base), rtol=tol(1e-5, 1e-12))


def test_vmap_equals_loop(model, data, tol):
  key, data = jax.random.key(7), data[:2]
  jit_loss, jit_terms = jax.jit(lambda b, k: vaejax.negative_elbo(
      model, b, k, num_samples=3))(data, key)
  keys = jax.random.split(key, len(data))
  one = jax.jit(lambda x, k: vaejax.elbo(model, x, k, num_samples=3).elbo)
  looped = [one(x, k) for x, k in zip(data, keys)]
  np.testing.assert_allclose(jit_terms.elbo, looped, rtol=tol(1e-5, 1e-12))
  bounds = jax.jit(lambda b, k: vaejax.negative_iwae_bound(
      model, b, k, num_samples=4)[1])(data, key)
  one = jax.jit(lambda x, k: vaejax.iwae_bound(model, x, k, 4))
  looped = [one(x, k) for x, k in zip(data, keys)]
  np.testing.assert_allclose(bounds, looped, rtol=tol(1e-5, 1e-12))
  # Same key, same draws: the same value twice.
  again = jax.jit(lambda b, k: vaejax.negative_elbo(model, b, k, num_samples=3))(
      data, key)[0]
  assert again == jit_loss


@dataclasses.dataclass
class Parametric:
  """Two layers whose posteriors come from parameters, for gradients."""
  params: dict
  latent_layers = 2

  def encode(self, x):
    p = self.params
    return p['m1'] + 0.1 * jnp.sum(x), p['v1']

  def encode_layer(self, layer, z1):
    p = self.params
    return p['m2'] + 0.1 * jnp.sum(z1), p['v2']

  def prior_layer(self, layer, z2):
    return jnp.full(2, jnp.sum(z2), z2.dtype), jnp.zeros(2, z2.dtype)

  def log_likelihood(self, x, z1):
    return -0.5 * jnp.sum(jnp.square(x[:2] - z1))


def parametric_elbo(m1, v1, m2, v2, x, analytic_kl):
  model = Parametric({'m1': m1, 'v1': v1, 'm2': m2, 'v2': v2})
  return vaejax.elbo(model, x, jax.random.key(8), num_samples=3,
                     analytic_kl=analytic_kl).elbo


def test_jit_equals_eager(dtype, tol):
  # On the small parametric model (op by op, the chain's solves would take
  # seconds to dispatch).
  args = [jnp.asarray(v, dtype) for v in ([0.3, -0.2], [-0.5, 0.4], [0.1, 0.7],
                                          [0.2, -0.3], [0.5, -1.0, 2.0])]
  for analytic_kl in (True, False):
    eager = parametric_elbo(*args, analytic_kl)
    jitted = jax.jit(parametric_elbo, static_argnums=5)(*args, analytic_kl)
    np.testing.assert_allclose(jitted, eager, rtol=tol(1e-6, 1e-12))


@pytest.mark.parametrize('analytic_kl', [True, False])
def test_gradients_match_finite_differences(dtype, analytic_kl):
  if dtype != jnp.float64:
    pytest.skip('finite differences need float64')
  args = (jnp.asarray([0.3, -0.2]), jnp.asarray([-0.5, 0.4]),
          jnp.asarray([0.1, 0.7]), jnp.asarray([0.2, -0.3]))
  x = jnp.asarray([0.5, -1.0, 2.0])
  check_grads(jax.jit(lambda *a: parametric_elbo(*a, x, analytic_kl)), args,
              order=1, modes=['rev'], eps=1e-5)


@pytest.mark.parametrize('mean, log_var', [(1e3, -30.0), (-1e3, 30.0), (0.0, 30.0)])
def test_gradients_are_finite_at_extreme_encoder_outputs(dtype, mean, log_var):
  full = lambda v: jnp.full(2, v, dtype)
  x = jnp.asarray([0.5, -1.0, 2.0], dtype)
  for analytic_kl in (True, False):
    grads = jax.jit(jax.grad(parametric_elbo, argnums=(0, 1, 2, 3)),
                    static_argnums=5)(full(mean), full(log_var), full(mean),
                                      full(log_var), x, analytic_kl)
    for g in grads:
      assert np.all(np.isfinite(g)), (mean, log_var, analytic_kl, g)


def test_a_layered_model_missing_its_methods_says_so():
  x = jnp.zeros(DATA_DIM)

  class NoPriorLayer:
    latent_layers = 2

    def encode(self, x):
      return jnp.zeros(2), jnp.zeros(2)

    def encode_layer(self, layer, z):
      return jnp.zeros(2), jnp.zeros(2)

    def log_likelihood(self, x, z):
      return jnp.sum(z)

  with pytest.raises(ValueError, match='latent_layers is 2 but the model has no '
                     'prior_layer'):
    vaejax.elbo(NoPriorLayer(), x, jax.random.key(0))

  class WrongSize(NoPriorLayer):
    def prior_layer(self, layer, z):
      return jnp.zeros(3), jnp.zeros(3)

  with pytest.raises(ValueError, match=r'prior_layer\(1, z\) is over 3 dimensions '
                     r'and q\(z_1\) over 2'):
    vaejax.elbo(WrongSize(), x, jax.random.key(0))

  class BatchedLayer(WrongSize):
    def encode_layer(self, layer, z):
      return jnp.zeros((3, 2)), jnp.zeros((3, 2))

  with pytest.raises(ValueError, match=r'model.encode_layer\(2, z\) returned mean '
                     r'\[3, 2\] and log_var \[3, 2\] for z \[2\]; expected \[L\] each'):
    vaejax.elbo(BatchedLayer(), x, jax.random.key(0))

  class Fractional(WrongSize):
    latent_layers = 1.5

  with pytest.raises(ValueError, match='latent_layers is 1.5; expected an int'):
    vaejax.iwae_bound(Fractional(), x, jax.random.key(0), 2)


def test_the_gradient_of_k_draws_is_the_mean_of_k_one_draw_gradients(dtype):
  # The K-draw ELBO's gradient (analytic_kl=False, as the VAE rows of
  # Burda et al. train) against the mean of K gradients of one draw each:
  # the same expectation and, the draws being independent, the same
  # variance. The gradients' coordinates share their draws, so the test is
  # on a few fixed random projections, each a scalar: the two means differ
  # by less than 4.5 standard errors (exceeded by chance with p < 1e-4 for
  # all 8), and their variances' ratio lies in [0.55, 1.8] (wider than the F
  # test's 1e-4 bounds at R = 200 repeats; sharing draws between the K
  # would multiply it by up to K).
  if dtype == jnp.float64:
    pytest.skip('a statistical property of the draws: float32 checks it')
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vaejax import nets  # pylint: disable=g-import-not-at-top
  net = nets.TwoLayerMLPVAE((4, 4, 1), 4, top_latent_dim=2, top_hidden_dims=(8,),
                            hidden_dims=(8,), activation='tanh',
                            rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(net, nnx.Param)
  params = jax.tree.map(lambda p: p.astype(dtype), params)
  x = (jax.random.uniform(jax.random.key(1), (3, 4, 4, 1)) < 0.3).astype(dtype)
  num_samples, repeats = 10, 200

  def flat_grad(key, k):
    grads = jax.grad(lambda p: vaejax.negative_elbo(
        nnx.merge(graphdef, p), x, key, num_samples=k, analytic_kl=False)[0])(params)
    return jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grads)])

  keys = jax.random.split(jax.random.key(2), repeats * (num_samples + 1))
  many = jax.jit(jax.vmap(lambda k: flat_grad(k, num_samples)))(keys[:repeats])
  ones = jax.jit(jax.vmap(lambda k: flat_grad(k, 1)))(keys[repeats:])
  ones = ones.reshape(repeats, num_samples, -1).mean(axis=1)
  directions = np.random.default_rng(0).normal(size=(many.shape[1], 8))
  many = np.asarray(many, np.float64) @ directions
  ones = np.asarray(ones, np.float64) @ directions
  z = (many.mean(0) - ones.mean(0)) / np.sqrt(
      (many.var(0, ddof=1) + ones.var(0, ddof=1)) / repeats)
  assert np.all(np.abs(z) < 4.5), z
  ratio = many.var(0, ddof=1) / ones.var(0, ddof=1)
  assert np.all((0.55 < ratio) & (ratio < 1.8)), ratio
