"""Posteriors and priors over z: small pytrees with `sample`, `log_prob`, `mean`.

  DiagonalGaussian(mean, log_var)          N(mean, diag(exp(log_var)))
  FullCovarianceGaussian(mean, scale_tril) N(mean, L L^T), L lower-triangular
  StandardNormal(dim)                      N(0, I_dim)
  MixtureOfDiagonalGaussians(means, log_vars, logits)
                                           sum_c pi_c N(means_c, diag(exp(log_vars_c)))

Each describes ONE example's distribution over a `[L]` latent (vmap for a
batch) and is a pytree: it passes through `jax.jit`, `jax.vmap` and
`jax.grad` as arguments and results. `kl_divergence(p, q)` gives KL(p || q) in
closed form for every pair of the three Gaussians, in both orders; a pair
without one (a mixture) raises a `TypeError` naming both types.

The Gaussians draw by reparameterisation, z = mean + L eps with eps ~ N(0, I)
drawn latent-major (`noise`), and `sample_and_noise` returns eps too: the
ELBO evaluates log q(z) from eps (`noise_log_prob`), which does not cancel
where the posterior is narrow next to its mean, as (z - mean) / std would.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import kl as kl_lib
from vaejax import precision

_LOG_2PI = math.log(2.0 * math.pi)


def noise(key, dim, num_samples, dtype):
  """eps ~ N(0, I): `[dim]`, or `[num_samples, dim]` drawn latent-major.

  Drawn as `[dim, K]` and transposed, so that the first k dimensions' draws
  are the same whatever `dim` (JAX's counter-based random bits agree on a
  prefix of the leading axis): a model padded to more latent dimensions, as
  in a vectorised sweep, draws the noise of the model it pads.
  """
  if num_samples is None:
    return jax.random.normal(key, (dim,), dtype)
  return jnp.moveaxis(jax.random.normal(key, (dim, num_samples), dtype), -1, 0)


def _pytree(data_fields, meta_fields=()):
  """A frozen dataclass registered as a pytree with these fields."""

  def register(cls):
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(
        cls, data_fields=list(data_fields), meta_fields=list(meta_fields))

  return register


def _lead(v, like):
  """`v` `[..., n]` with ones prepended to the rank of `like` (no implicit rank promotion)."""
  return jnp.expand_dims(v, tuple(range(jnp.ndim(like) - jnp.ndim(v))))


def _check_point(dist, z, function):
  """`z` is `[..., L]` for a distribution over `[L]`."""
  if jnp.ndim(z) < 1 or jnp.shape(z)[-1] != dist.dim:
    raise ValueError(f'{type(dist).__name__}.{function} takes z [..., {dist.dim}] '
                     f'(its dimension last); got {checks.shape_of(z)}')


# For the distributions of other modules (vaejax.flows).
check_point = _check_point
pytree = _pytree
lead = _lead


def _gaussian_log_prob(whitened, half_log_det):
  """log N at a point whose whitened offset L^-1 (z - mean) is `whitened` `[..., L]`."""
  dim = jnp.shape(whitened)[-1]
  return -0.5 * (dim * _LOG_2PI + jnp.sum(jnp.square(whitened), axis=-1)) - half_log_det


class _NoiseForm:
  """`sample_and_log_prob` of a Gaussian: log q(z) from the draws' noise."""

  def sample_and_log_prob(self, key, num_samples=None):
    """`sample`'s draws and log q(z): `[L]` and a scalar, or `[K, L]` and `[K]`.

    log q(z) is `noise_log_prob(eps)` at the draws' noise: recovering eps as
    (z - mean) / std instead cancels catastrophically where std is small
    next to the mean (5.9 nats off over 50 dimensions in float32 at mean
    8, log_var -30).
    """
    z, eps = self.sample_and_noise(key, num_samples)
    return z, self.noise_log_prob(eps)


@_pytree(['mean', 'log_var'])
class DiagonalGaussian(_NoiseForm):
  """N(mean, diag(exp(log_var))) over `[L]`; the VAE's usual posterior.

  Attributes:
    mean: `[L]`.
    log_var: `[L]` log-variances.
  """
  mean: jax.Array
  log_var: jax.Array

  def check_one(self, function):
    """Raises a one-line ValueError unless this is one example's `[L]` Gaussian."""
    checks.one_example(f'DiagonalGaussian.{function}',
                       (('mean', self.mean), ('log_var', self.log_var)))

  @property
  def dim(self):
    return jnp.shape(self.mean)[-1]

  def sample(self, key, num_samples=None):
    """z = mean + exp(log_var / 2) * eps: `[L]`, or `[K, L]` for K samples.

    The same draws as `vaejax.reparameterize(key, mean, log_var, num_samples)`.
    """
    return self.sample_and_noise(key, num_samples)[0]

  def sample_and_noise(self, key, num_samples=None):
    """`sample`'s draws and their noise eps, the same shape."""
    self.check_one('sample')
    eps = noise(key, self.dim, num_samples, jnp.result_type(self.mean))
    return _lead(self.mean, eps) + _lead(jnp.exp(0.5 * self.log_var), eps) * eps, eps

  def log_prob(self, z):
    """log q(z) for z `[..., L]`: -1/2 sum [log 2 pi + log_var + (z - mean)^2 / var]."""
    self.check_one('log_prob')
    _check_point(self, z, 'log_prob')
    mean, log_var = _lead(self.mean, z), _lead(self.log_var, z)
    return -0.5 * jnp.sum(_LOG_2PI + log_var + jnp.square(z - mean)
                          * jnp.exp(-log_var), axis=-1)

  def noise_log_prob(self, eps):
    """log q(z) at z = mean + std * eps: -1/2 sum [log 2 pi + log_var + eps^2]."""
    return -0.5 * jnp.sum(_LOG_2PI + _lead(self.log_var, eps) + jnp.square(eps),
                          axis=-1)


@_pytree(['mean', 'scale_tril'])
class FullCovarianceGaussian(_NoiseForm):
  """N(mean, L L^T) over `[L]`, from a lower-triangular Cholesky factor.

  Entries of `scale_tril` above the diagonal are ignored; its diagonal must
  be positive (a network produces it through a positive function).

  Attributes:
    mean: `[L]`.
    scale_tril: `[L, L]` lower-triangular factor of the covariance.
  """
  mean: jax.Array
  scale_tril: jax.Array

  def check_one(self, function):
    """Raises a one-line ValueError unless this is one example's `[L]` Gaussian."""
    checks.one_example(f'FullCovarianceGaussian.{function}',
                       (('mean', self.mean),), (('scale_tril', self.scale_tril),))

  @property
  def dim(self):
    return jnp.shape(self.mean)[-1]

  @property
  def _tril(self):
    return jnp.tril(self.scale_tril)

  def half_log_det(self):
    """1/2 log det (L L^T) = sum log |L_kk|."""
    return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.scale_tril))))

  def sample(self, key, num_samples=None):
    """z = mean + L eps: `[L]`, or `[K, L]` for K samples."""
    return self.sample_and_noise(key, num_samples)[0]

  @precision.highest
  def sample_and_noise(self, key, num_samples=None):
    """`sample`'s draws and their noise eps, the same shape."""
    self.check_one('sample')
    eps = noise(key, self.dim, num_samples, jnp.result_type(self.mean))
    return _lead(self.mean, eps) + eps @ self._tril.T, eps

  @precision.highest
  def log_prob(self, z):
    """log N(z; mean, L L^T) for z `[..., L]`, by a triangular solve."""
    self.check_one('log_prob')
    _check_point(self, z, 'log_prob')
    offsets = jnp.reshape(z - _lead(self.mean, z), (-1, self.dim))
    whitened = jax.scipy.linalg.solve_triangular(self._tril, offsets.T, lower=True).T
    return _gaussian_log_prob(whitened.reshape(jnp.shape(z)), self.half_log_det())

  def noise_log_prob(self, eps):
    """log q(z) at z = mean + L eps: -1/2 sum [log 2 pi + eps^2] - sum log |L_kk|."""
    return _gaussian_log_prob(eps, self.half_log_det())


@_pytree([], ['dim', 'dtype'])
class StandardNormal(_NoiseForm):
  """N(0, I) over `[dim]`: the VAE's usual prior. `dim` is static.

  Attributes:
    dim: L.
    dtype: of its draws and mean.
  """
  dim: int
  dtype: jnp.dtype = jnp.float32

  @property
  def mean(self):
    return jnp.zeros(self.dim, self.dtype)

  def sample(self, key, num_samples=None):
    """eps ~ N(0, I): `[L]`, or `[K, L]` for K samples."""
    return noise(key, self.dim, num_samples, self.dtype)

  def sample_and_noise(self, key, num_samples=None):
    z = self.sample(key, num_samples)
    return z, z

  def log_prob(self, z):
    """log N(z; 0, I) for z `[..., L]`: -1/2 sum [log 2 pi + z^2]."""
    _check_point(self, z, 'log_prob')
    return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)

  noise_log_prob = log_prob


@_pytree(['means', 'log_vars', 'logits'])
class MixtureOfDiagonalGaussians:
  """sum_c pi_c N(means_c, diag(exp(log_vars_c))), pi = softmax(logits).

  The VampPrior is the uniform mixture (`uniform`) of the posteriors at
  learned pseudo-inputs. No KL against it has a closed form: the ELBO
  estimates it from draws (`analytic_kl=False`).

  Attributes:
    means: `[C, L]`.
    log_vars: `[C, L]`.
    logits: `[C]` unnormalised log mixture weights.
  """
  means: jax.Array
  log_vars: jax.Array
  logits: jax.Array

  @classmethod
  def uniform(cls, means, log_vars):
    """Equal weights 1/C."""
    return cls(means, log_vars, jnp.zeros(jnp.shape(means)[:1], jnp.result_type(means)))

  def check_one(self, function):
    """Raises a one-line ValueError unless this is one example's mixture."""
    shapes = (jnp.shape(self.means), jnp.shape(self.log_vars))
    if (jnp.ndim(self.means) != 2 or shapes[0] != shapes[1]
        or jnp.shape(self.logits) != shapes[0][:1]):
      raise ValueError(
          f'MixtureOfDiagonalGaussians.{function} takes one example: got '
          f'means {checks.shape_of(self.means)}, log_vars '
          f'{checks.shape_of(self.log_vars)}, logits {checks.shape_of(self.logits)}; '
          'expected [C, L], [C, L] and [C] (use jax.vmap for a batch)')

  @property
  def dim(self):
    return jnp.shape(self.means)[-1]

  @property
  @precision.highest
  def mean(self):
    return jax.nn.softmax(self.logits) @ self.means

  def log_prob(self, z):
    """log sum_c pi_c N(z; means_c, ...) for z `[..., L]`, by logsumexp."""
    self.check_one('log_prob')
    _check_point(self, z, 'log_prob')
    per_component = jax.vmap(
        lambda m, v: DiagonalGaussian(m, v).log_prob(z), out_axes=-1)(
            self.means, self.log_vars)
    return jax.nn.logsumexp(
        per_component + _lead(jax.nn.log_softmax(self.logits), per_component), axis=-1)

  def sample_and_log_prob(self, key, num_samples=None):
    """`sample`'s draws and their `log_prob`."""
    z = self.sample(key, num_samples)
    return z, self.log_prob(z)

  def sample(self, key, num_samples=None):
    """A component c ~ pi, then z ~ N(means_c, ...): `[L]` or `[K, L]`."""
    self.check_one('sample')
    component_key, noise_key = jax.random.split(key)
    shape = () if num_samples is None else (num_samples,)
    c = jax.random.categorical(component_key, self.logits, shape=shape)
    eps = noise(noise_key, self.dim, num_samples, jnp.result_type(self.means))
    return self.means[c] + jnp.exp(0.5 * self.log_vars[c]) * eps  # all [..., L]


# The distributions of this module, which all know their `dim`.
KNOWN = (DiagonalGaussian, FullCovarianceGaussian, StandardNormal,
         MixtureOfDiagonalGaussians)


def _check_same_dim(p, q):
  if p.dim != q.dim:
    raise ValueError(f'kl_divergence: p is a {type(p).__name__} over {p.dim} '
                     f'dimensions, q a {type(q).__name__} over {q.dim}')


def _full_from_diagonal(d):
  return FullCovarianceGaussian(d.mean, jnp.diag(jnp.exp(0.5 * d.log_var)))


def _full_full(p, q):
  return kl_lib.gaussian_kl_tril(p.mean, p.scale_tril, q.mean, q.scale_tril)


def _full_diagonal(p, q):
  """The trace trick with S_Q = diag(v): every term is a sum, O(L^2).

  KL = 1/2 [sum_ij L_P,ij^2 / v_i + sum_i (m_Q - m_P)_i^2 / v_i - d
            + sum_i log v_i] - sum_i log |L_P,ii|.
  """
  inv_var = jnp.exp(-q.log_var)
  trace_term = jnp.sum(jnp.square(jnp.tril(p.scale_tril)) * inv_var[:, None])
  mahalanobis = jnp.sum(jnp.square(q.mean - p.mean) * inv_var)
  return (0.5 * (trace_term + mahalanobis - p.dim + jnp.sum(q.log_var))
          - p.half_log_det())


def _full_standard(p, q):
  """KL(N(m, L L^T) || N(0, I)) = 1/2 [||L||_F^2 + ||m||^2 - d] - sum log |L_kk|."""
  del q
  return (0.5 * (jnp.sum(jnp.square(jnp.tril(p.scale_tril))) + jnp.sum(jnp.square(p.mean))
                 - p.dim) - p.half_log_det())


def _standard(dist):
  return DiagonalGaussian(jnp.zeros(dist.dim, dist.dtype), jnp.zeros(dist.dim, dist.dtype))


# (type of p, type of q) -> KL(p || q); one closed form per ordered pair.
_KL = {
    (DiagonalGaussian, StandardNormal):
        lambda p, q: kl_lib.standard_normal_kl(p.mean, p.log_var),
    (DiagonalGaussian, DiagonalGaussian):
        lambda p, q: kl_lib.diag_gaussian_kl(p.mean, p.log_var, q.mean, q.log_var),
    (DiagonalGaussian, FullCovarianceGaussian):
        lambda p, q: _full_full(_full_from_diagonal(p), q),
    (FullCovarianceGaussian, FullCovarianceGaussian): _full_full,
    (FullCovarianceGaussian, DiagonalGaussian): _full_diagonal,
    (FullCovarianceGaussian, StandardNormal): _full_standard,
    (StandardNormal, StandardNormal):
        lambda p, q: jnp.zeros((), p.dtype),
    (StandardNormal, DiagonalGaussian):
        lambda p, q: _KL[DiagonalGaussian, DiagonalGaussian](_standard(p), q),
    (StandardNormal, FullCovarianceGaussian):
        lambda p, q: _full_full(_full_from_diagonal(_standard(p)), q),
}


def has_closed_form_kl(p, q):
  """Whether `kl_divergence(p, q)` has a closed form for these types."""
  return has_closed_form_kl_types(type(p), type(q))


def has_closed_form_kl_types(p_type, q_type):
  """Whether `kl_divergence` has a closed form for a p and a q of these types."""
  return (p_type, q_type) in _KL


@precision.highest
def kl_divergence(p, q):
  """KL(p || q) in closed form, for ONE example's distributions.

  Every ordered pair of `DiagonalGaussian`, `FullCovarianceGaussian` and
  `StandardNormal`: diagonal against standard normal is
  `standard_normal_kl`'s expm1 form, full covariance goes through the trace
  trick on Cholesky factors (`vaejax.gaussian_kl_tril`; no inverse or
  determinant formed), full against diagonal or N(0, I) through its sums.

  Raises:
    TypeError: the pair has no closed form here (a mixture, another type).
    ValueError: p and q are over different dimensions.
  """
  function = _KL.get((type(p), type(q)))
  if function is None:
    raise TypeError(f'kl_divergence has no closed form for {type(p).__name__} '
                    f'|| {type(q).__name__}; estimate it from samples '
                    '(analytic_kl=False in the ELBO)')
  for dist in (p, q):
    if hasattr(dist, 'check_one'):
      dist.check_one('kl_divergence')
  _check_same_dim(p, q)
  return function(p, q)
