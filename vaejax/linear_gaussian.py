"""A linear-Gaussian latent model: a VAE whose log p(x) is known exactly.

  z ~ N(0, I_L),   x | z ~ N(W z + b, sigma^2 I_D),

so the marginal is x ~ N(b, W W^T + sigma^2 I) and the posterior is Gaussian,

  p(z|x) = N(S W^T (x - b) / sigma^2, S),   S = (I + W^T W / sigma^2)^-1.

When the columns of W are orthogonal, W^T W = diag(||w_k||^2) and the exact
posterior is diagonal, var_k = sigma^2 / (sigma^2 + ||w_k||^2): it lies inside
the VAE's family q(z|x) = N(mean, diag(exp(log_var))). With this posterior as
the encoder, log p(x, z) - log q(z|x) = log p(x) for every z, so the ELBO is
tight; with any other encoder it lies below log p(x) by KL(q || p(z|x)). This
makes the model a reference for the ELBO and the importance-weighted bound, and
its samples a dataset whose true log-likelihood is known.

For any W the exact posterior is a full-covariance Gaussian (`posterior`),
with precision Lambda = I + W^T W / sigma^2. The best diagonal posterior
(`best_diagonal_posterior`: the exact mean, variances 1 / Lambda_kk) falls
short of log p(x) by the mean-field gap
KL(q || p(z|x)) = 1/2 (sum_k log Lambda_kk - log det Lambda), zero exactly
when the columns of W are orthogonal (`make_linear_gaussian(...,
correlation=0)`).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaejax import distributions
from vaejax import likelihoods
from vaejax import precision as precision_lib


class LinearGaussian(NamedTuple):
  """Parameters of the model, with the `encode` / `log_likelihood` protocol.

  `encode` returns the exact posterior when the columns of `weight` are
  orthogonal (as `make_linear_gaussian` builds them).

  Attributes:
    weight: `[D, L]` W.
    bias: `[D]` b.
    log_var: scalar log sigma^2, the observation noise.
  """
  weight: jax.Array
  bias: jax.Array
  log_var: jax.Array

  @precision_lib.highest
  def encode(self, x):
    """The posterior p(z|x) as (mean `[L]`, log_var `[L]`)."""
    noise_var = jnp.exp(self.log_var)
    column_sq_norms = jnp.sum(jnp.square(self.weight), axis=0)
    post_var = noise_var / (noise_var + column_sq_norms)
    post_mean = post_var * (self.weight.T @ (x - self.bias)) / noise_var
    return post_mean, jnp.log(post_var)

  def _precision(self):
    """Lambda = I + W^T W / sigma^2 `[L, L]`, the posterior precision."""
    latent_dim = self.weight.shape[1]
    return jnp.eye(latent_dim, dtype=self.weight.dtype) + (
        self.weight.T @ self.weight) * jnp.exp(-self.log_var)

  def _posterior_mean(self, x, precision_tril):
    """Lambda^-1 W^T (x - b) / sigma^2, by two triangular solves."""
    rhs = self.weight.T @ (x - self.bias) * jnp.exp(-self.log_var)
    half = jax.scipy.linalg.solve_triangular(precision_tril, rhs, lower=True)
    return jax.scipy.linalg.solve_triangular(precision_tril.T, half, lower=False)

  @precision_lib.highest
  def posterior(self, x):
    """The exact posterior p(z|x), a `FullCovarianceGaussian`, for any W.

    Its covariance Lambda^-1 gets a lower-triangular factor without an
    inverse: with J the order-reversing permutation and C C^T = J Lambda J
    (Cholesky), L = J C^-T J is lower-triangular and L L^T = Lambda^-1.
    """
    precision = self._precision()
    flipped_tril = jnp.linalg.cholesky(precision[::-1, ::-1])
    eye = jnp.eye(precision.shape[0], dtype=precision.dtype)
    inverse_transpose = jax.scipy.linalg.solve_triangular(
        flipped_tril, eye, lower=True, trans='T')
    scale_tril = inverse_transpose[::-1, ::-1]
    return distributions.FullCovarianceGaussian(
        self._posterior_mean(x, jnp.linalg.cholesky(precision)), scale_tril)

  @precision_lib.highest
  def best_diagonal_posterior(self, x):
    """The `DiagonalGaussian` closest to p(z|x) in KL(q || p): mean, 1 / Lambda_kk."""
    precision = self._precision()
    return distributions.DiagonalGaussian(
        self._posterior_mean(x, jnp.linalg.cholesky(precision)),
        -jnp.log(jnp.diagonal(precision)))

  @precision_lib.highest
  def mean_field_gap(self):
    """KL(best diagonal q || p(z|x)) = 1/2 (sum_k log Lambda_kk - log det Lambda), any x."""
    precision = self._precision()
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(precision))))
    return 0.5 * jnp.sum(jnp.log(jnp.diagonal(precision))) - half_log_det

  @precision_lib.highest
  def log_likelihood(self, x, z):
    """log p(x|z) = log N(x; W z + b, sigma^2 I)."""
    return likelihoods.gaussian_log_prob(
        self.weight @ z + self.bias, self.log_var, x)

  @precision_lib.highest
  def log_marginal(self, x):
    """log p(x) = log N(x; b, W W^T + sigma^2 I), by a Cholesky factor."""
    return _gaussian_log_density(x, self.bias, self.weight @ self.weight.T,
                                 self.log_var)

  @precision_lib.highest
  def sample(self, key, num_samples):
    """Draws `[num_samples, D]` examples x ~ p(x)."""
    z_key, noise_key = jax.random.split(key)
    latent_dim = self.weight.shape[1]
    data_dim = self.bias.shape[0]
    dtype = self.weight.dtype
    z = jax.random.normal(z_key, (num_samples, latent_dim), dtype)
    noise = jax.random.normal(noise_key, (num_samples, data_dim), dtype)
    return z @ self.weight.T + self.bias[None] + jnp.exp(0.5 * self.log_var) * noise


@precision_lib.highest
def make_linear_gaussian(key, data_dim, latent_dim, *, noise_std=0.5,
                         correlation=0.0, dtype=jnp.float32):
  """A random model; with `correlation=0` its W has orthogonal columns.

  W = U diag(s) M with U `[D, L]` orthonormal columns (from a QR
  decomposition), column norms s spread over [1, 3], and M the Cholesky
  factor (upper) of the matrix with ones on the diagonal and `correlation`
  elsewhere, so W^T W = M^T diag(s^2) M: at 0 the columns are orthogonal
  and `encode` is exact; above 0 they are not, and only `posterior` is.
  b ~ N(0, I).

  Args:
    key: a `jax.random.key`.
    data_dim: D.
    latent_dim: L, at most D.
    noise_std: sigma, the observation noise.
    correlation: in [0, 1), how far from orthogonal W's columns are.
    dtype: the parameters' floating dtype.

  Returns:
    A `LinearGaussian`.
  """
  if not 1 <= latent_dim <= data_dim:
    raise ValueError(
        f'latent_dim must be in [1, data_dim={data_dim}], got {latent_dim}')
  if not 0 <= correlation < 1:
    raise ValueError(f'correlation must be in [0, 1), got {correlation}')
  weight_key, bias_key = jax.random.split(key)
  basis, _ = jnp.linalg.qr(
      jax.random.normal(weight_key, (data_dim, latent_dim), dtype))
  scales = jnp.linspace(1.0, 3.0, latent_dim, dtype=dtype)
  weight = basis * scales[None]
  if correlation:
    ones = jnp.ones((latent_dim, latent_dim), dtype)
    mixing = jnp.linalg.cholesky(
        correlation * ones + (1 - correlation) * jnp.eye(latent_dim, dtype=dtype)).T
    weight = weight @ mixing
  return LinearGaussian(
      weight=weight,
      bias=jax.random.normal(bias_key, (data_dim,), dtype),
      log_var=jnp.asarray(2.0 * math.log(noise_std), dtype))


def _gaussian_log_density(x, mean, low_rank_cov, log_var):
  """log N(x; mean, low_rank_cov + exp(log_var) I), by a Cholesky factor."""
  dim = mean.shape[0]
  scale_tril = jnp.linalg.cholesky(
      low_rank_cov + jnp.exp(log_var) * jnp.eye(dim, dtype=mean.dtype))
  whitened = jax.scipy.linalg.solve_triangular(scale_tril, x - mean, lower=True)
  half_log_det = jnp.sum(jnp.log(jnp.diagonal(scale_tril)))
  return -0.5 * (dim * math.log(2.0 * math.pi)
                 + jnp.sum(jnp.square(whitened))) - half_log_det


def _conditioned(prior_mean, prior_cov, weight, bias, log_var, y):
  """u | y for u ~ N(prior_mean, prior_cov), y | u ~ N(weight u + bias, exp(log_var) I).

  Precision Lambda = prior_cov^-1 + weight^T weight / s^2 and mean
  Lambda^-1 (prior_cov^-1 prior_mean + weight^T (y - bias) / s^2), by
  Cholesky solves; a `FullCovarianceGaussian`.
  """
  eye = jnp.eye(prior_mean.shape[0], dtype=prior_mean.dtype)
  prior_precision = jax.scipy.linalg.cho_solve(
      (jnp.linalg.cholesky(prior_cov), True), eye)
  noise_precision = jnp.exp(-log_var)
  factor = (jnp.linalg.cholesky(
      prior_precision + noise_precision * weight.T @ weight), True)
  cov = jax.scipy.linalg.cho_solve(factor, eye)
  mean = jax.scipy.linalg.cho_solve(
      factor, prior_precision @ prior_mean + noise_precision * weight.T @ (y - bias))
  return distributions.FullCovarianceGaussian(
      mean, jnp.linalg.cholesky(0.5 * (cov + cov.T)))


class LinearGaussianChain(NamedTuple):
  """Two linear-Gaussian layers, z_2 -> z_1 -> x: the exact two-layer VAE.

    z_2 ~ N(0, I),  z_1 | z_2 ~ N(A z_2 + a, tau^2 I),
    x | z_1 ~ N(W z_1 + b, sigma^2 I),

  so z_1 ~ N(a, C) with C = A A^T + tau^2 I and x ~ N(W a + b,
  W C W^T + sigma^2 I) (`log_marginal`). The posterior factorises as
  p(z_1, z_2 | x) = p(z_1|x) p(z_2|z_1) (x depends on z_2 only through z_1),
  both full-covariance Gaussians, and the model's inference chain is
  exactly that: `encode` is p(z_1|x), `encode_layer(2, z_1)` is p(z_2|z_1).
  With it every log importance weight of `vaejax.bounds` is log p(x); the
  model follows the layered protocol of `vaejax.models`.

  Attributes:
    weight: `[D, L1]` W.
    bias: `[D]` b.
    log_var: scalar log sigma^2.
    top_weight: `[L1, L2]` A.
    top_bias: `[L1]` a.
    top_log_var: scalar log tau^2.
  """
  weight: jax.Array
  bias: jax.Array
  log_var: jax.Array
  top_weight: jax.Array
  top_bias: jax.Array
  top_log_var: jax.Array

  latent_layers = 2

  def _z1_cov(self):
    return self.top_weight @ self.top_weight.T

  @precision_lib.highest
  def encode(self, x):
    """p(z_1|x), a `FullCovarianceGaussian`."""
    eye = jnp.eye(self.top_bias.shape[0], dtype=self.top_bias.dtype)
    return _conditioned(self.top_bias, self._z1_cov() + jnp.exp(self.top_log_var) * eye,
                        self.weight, self.bias, self.log_var, x)

  @precision_lib.highest
  def encode_layer(self, layer, z1):
    """p(z_2|z_1) (layer 2), a `FullCovarianceGaussian`."""
    del layer  # the only one above z_1
    top_dim = self.top_weight.shape[1]
    return _conditioned(jnp.zeros(top_dim, self.top_bias.dtype),
                        jnp.eye(top_dim, dtype=self.top_bias.dtype),
                        self.top_weight, self.top_bias, self.top_log_var, z1)

  def prior(self):
    """p(z_2) = N(0, I)."""
    return distributions.StandardNormal(self.top_weight.shape[1],
                                        jnp.result_type(self.top_bias))

  @precision_lib.highest
  def prior_layer(self, layer, z2):
    """p(z_1|z_2) = N(A z_2 + a, tau^2 I) (layer 1)."""
    del layer
    return distributions.DiagonalGaussian(
        self.top_weight @ z2 + self.top_bias,
        jnp.full(self.top_bias.shape, self.top_log_var))

  @precision_lib.highest
  def log_likelihood(self, x, z1):
    """log p(x|z_1) = log N(x; W z_1 + b, sigma^2 I)."""
    return likelihoods.gaussian_log_prob(self.weight @ z1 + self.bias,
                                         self.log_var, x)

  @precision_lib.highest
  def log_marginal(self, x):
    """log p(x) = log N(x; W a + b, W C W^T + sigma^2 I)."""
    eye = jnp.eye(self.top_bias.shape[0], dtype=self.top_bias.dtype)
    z1_cov = self._z1_cov() + jnp.exp(self.top_log_var) * eye
    return _gaussian_log_density(x, self.weight @ self.top_bias + self.bias,
                                 self.weight @ z1_cov @ self.weight.T, self.log_var)

  @precision_lib.highest
  def sample(self, key, num_samples):
    """Draws `[num_samples, D]` examples x ~ p(x), through z_2 and z_1."""
    keys = jax.random.split(key, 3)
    dtype = self.bias.dtype
    z2 = jax.random.normal(keys[0], (num_samples, self.top_weight.shape[1]), dtype)
    z1 = (z2 @ self.top_weight.T + self.top_bias[None] + jnp.exp(0.5 * self.top_log_var)
          * jax.random.normal(keys[1], (num_samples, self.top_bias.shape[0]), dtype))
    return (z1 @ self.weight.T + self.bias[None] + jnp.exp(0.5 * self.log_var)
            * jax.random.normal(keys[2], (num_samples, self.bias.shape[0]), dtype))


@precision_lib.highest
def make_linear_gaussian_chain(key, data_dim, latent_dims, *, noise_std=0.5,
                               top_noise_std=0.5, dtype=jnp.float32):
  """A random `LinearGaussianChain` with latent sizes `latent_dims` = (L1, L2).

  W `[D, L1]` and A `[L1, L2]` have N(0, 1/fan_in) entries, b ~ N(0, I),
  a ~ N(0, I); sigma = `noise_std`, tau = `top_noise_std`.
  """
  if len(latent_dims) != 2 or not 1 <= latent_dims[1] <= latent_dims[0] <= data_dim:
    raise ValueError(f'latent_dims must be (L1, L2) with 1 <= L2 <= L1 <= '
                     f'data_dim={data_dim}, got {tuple(latent_dims)}')
  first, top = latent_dims
  keys = jax.random.split(key, 4)
  return LinearGaussianChain(
      weight=jax.random.normal(keys[0], (data_dim, first), dtype) / math.sqrt(first),
      bias=jax.random.normal(keys[1], (data_dim,), dtype),
      log_var=jnp.asarray(2.0 * math.log(noise_std), dtype),
      top_weight=jax.random.normal(keys[2], (first, top), dtype) / math.sqrt(top),
      top_bias=jax.random.normal(keys[3], (first,), dtype),
      top_log_var=jnp.asarray(2.0 * math.log(top_noise_std), dtype))
