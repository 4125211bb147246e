"""vaejax.evaluation: latent statistics against their closed forms on an exact model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import vaejax
from vaejax import config as config_lib
from vaejax import distributions
from vaejax import evaluation
from vaejax import plots


def exact_model_with_column_norms(norms, data_dim=12, noise_std=0.5):
  """A linear-Gaussian model whose W has orthogonal columns of these norms."""
  basis, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0),
                                             (data_dim, len(norms))))
  return vaejax.LinearGaussian(
      weight=basis * jnp.asarray(norms)[None],
      bias=jax.random.normal(jax.random.key(1), (data_dim,)),
      log_var=jnp.asarray(2 * np.log(noise_std), jnp.float32))


@pytest.mark.jax_defaults
def test_active_units_and_kl_per_dimension_match_the_closed_forms():
  # With the exact posterior as encoder, posterior variance
  # v_k = s^2 / (s^2 + ||w_k||^2), and over x ~ p(x) the posterior mean has
  # variance 1 - v_k (the law of total variance) and mean 0, so
  # E_x KL(q_k || N(0, 1)) = 1/2 (v_k + (1 - v_k) - 1 - log v_k) = -1/2 log v_k.
  # A column of norm 0.01 gives 1 - v_k = 4e-4: not active (threshold 0.01).
  norms = np.array([2.0, 0.01, 1.0, 0.3])
  model = exact_model_with_column_norms(norms)
  x = model.sample(jax.random.key(2), 8000)
  stats = jax.jit(evaluation.make_latent_stats(lambda p: p, batch_size=500))
  active, kl_per_dim = stats(model, x, jax.random.key(3))
  noise_var = 0.25
  v = noise_var / (noise_var + norms ** 2)
  assert int(active) == int(np.sum(1 - v > evaluation.ACTIVE_UNIT_THRESHOLD)) == 3
  # Monte Carlo: KL_k(x) = 1/2 (v_k + m_k(x)^2 - 1 - log v_k), m_k^2 has
  # variance 2 (1 - v_k)^2; five standard errors.
  stderr = 0.5 * np.sqrt(2) * (1 - v) / np.sqrt(len(x))
  np.testing.assert_array_less(np.abs(kl_per_dim - (-0.5 * np.log(v))),
                               5 * stderr + 1e-5)


class Shifted:
  """The exact model with its encoder moved off the exact posterior."""

  def __init__(self, model):
    self.model = model

  def encode(self, x):
    mean, log_var = self.model.encode(x)
    return mean + 0.3, log_var - 0.5

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


@pytest.mark.jax_defaults
def test_a_runs_final_figures_of_the_exact_model_are_its_true_nll():
  # What a run reports (results_of over make_final_evaluation) on a
  # linear-Gaussian model whose log p(x) is analytic: with the exact
  # posterior every draw's weight is p(x), so the ELBO and the IWAE bound
  # are the true NLL; off it, truth < IWAE NLL < -ELBO, each gap many
  # standard errors.
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 2)
  x = model.sample(jax.random.key(1), 500)
  log_marginal = np.asarray(jax.vmap(model.log_marginal)(x))
  config = config_lib.TrainConfig(workdir='unused', latent_dim=2,
                                  eval_iwae_samples=50)

  def results(model_fn):
    final = jax.jit(evaluation.make_final_evaluation(
        model_fn, batch_size=100, iwae_samples=50, iwae_chunk_size=1000))(
            model, x, x[:100], jax.random.key(2), jax.random.key(3))
    final = jax.tree.map(np.asarray, final)
    return evaluation.results_of(config, final, log_marginal), final['bounds']

  exact, _ = results(lambda p: p)
  truth = -log_marginal.mean()
  assert exact['test_nll_true'] == pytest.approx(truth, rel=1e-6)
  assert exact['test_nll_iwae'] == pytest.approx(truth, rel=1e-5)
  # The test ELBO's E_q log p(x|z) is one draw per example (its KL is in
  # closed form): its mean over 500 examples is the truth to about 0.05 nats.
  assert abs(-exact['test_elbo'] - truth) < 0.2
  shifted, bounds = results(Shifted)
  assert shifted['test_nll_true'] == exact['test_nll_true']
  gaps = log_marginal - bounds  # paired, per example
  assert gaps.mean() > 5 * gaps.std() / np.sqrt(len(gaps))
  assert shifted['test_nll_iwae'] == pytest.approx(truth + gaps.mean(), rel=1e-5)
  assert shifted['test_nll_iwae'] < -shifted['test_elbo'] - 1.0


class Identity2D:
  """A 2-D model whose image of z is z itself: manifold.png shows the grid."""

  def __init__(self, prior):
    self._prior = prior

  def prior(self):
    return self._prior

  def encode(self, x):
    return jnp.reshape(x, (2,)), jnp.zeros(2)

  def log_likelihood(self, x, z):
    return -jnp.sum((jnp.reshape(x, (2,)) - z) ** 2)

  def mean_image(self, z):
    return jnp.reshape(z, (1, 2, 1))


def manifold_of(model, monkeypatch, tmp_path):
  """(the `[400, 2]` latents manifold.png decodes, its title)."""
  saved = {}
  monkeypatch.setattr(
      plots, 'save_grid',
      lambda path, images, num_cols, **kw: saved.update(
          {path.name: (np.asarray(images).reshape(-1, 2), kw.get('title'))}))
  evaluation.save_images(tmp_path, model, jnp.zeros((16, 1, 2, 1)),
                         jax.random.key(0), 2, (0.0, 1.0))
  return saved['manifold.png']


def test_the_manifold_grids_the_models_own_prior(monkeypatch, tmp_path):
  # Each axis at the prior marginal's quantiles (i + 0.5) / 20, i = 0..19.
  quantiles = scipy.stats.norm.ppf((np.arange(20) + 0.5) / 20)
  z, title = manifold_of(Identity2D(distributions.StandardNormal(2)),
                         monkeypatch, tmp_path)
  np.testing.assert_allclose(np.unique(z[:, 0]), quantiles, rtol=1e-5)
  assert 'N(0, I)' in title
  # A learned diagonal prior: its own quantiles, m + s Phi^-1(q).
  mean, std = np.array([3.0, -2.0]), np.array([0.5, 2.0])
  learned = distributions.DiagonalGaussian(jnp.asarray(mean),
                                           jnp.asarray(2 * np.log(std)))
  z, title = manifold_of(Identity2D(learned), monkeypatch, tmp_path)
  for axis in (0, 1):
    np.testing.assert_allclose(np.unique(z[:, axis]),
                               mean[axis] + std[axis] * quantiles, rtol=1e-5)
  assert 'prior quantiles' in title
  # A mixture (a VampPrior): no closed-form quantiles; those of its draws.
  # Two components at -4 and 4 on the first axis: no grid point near 0,
  # where N(0, I)'s would be densest.
  mixture = distributions.MixtureOfDiagonalGaussians.uniform(
      jnp.array([[-4.0, 0.0], [4.0, 0.0]]), jnp.full((2, 2), np.log(0.25)))
  z, title = manifold_of(Identity2D(mixture), monkeypatch, tmp_path)
  first = np.unique(z[:, 0])
  assert len(first) == 20 and np.min(np.abs(first)) > 2.0
  assert np.sum(first < 0) == np.sum(first > 0) == 10
  assert 'prior draws' in title
