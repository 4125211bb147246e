"""vaejax.evaluation: latent statistics against their closed forms on an exact model."""

import jax
import jax.numpy as jnp
import numpy as np

import vaejax
from vaejax import evaluation


def exact_model_with_column_norms(norms, data_dim=12, noise_std=0.5):
  """A linear-Gaussian model whose W has orthogonal columns of these norms."""
  basis, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0),
                                             (data_dim, len(norms))))
  return vaejax.LinearGaussian(
      weight=basis * jnp.asarray(norms)[None],
      bias=jax.random.normal(jax.random.key(1), (data_dim,)),
      log_var=jnp.asarray(2 * np.log(noise_std), jnp.float32))


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
