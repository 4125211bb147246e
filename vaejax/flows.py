"""Normalising-flow posteriors: a diagonal Gaussian pushed through T invertible maps.

  z_0 ~ q_0 = N(mean, diag(exp(log_var))),  z_t = f_t(z_{t-1}),  t = 1..T,
  log q(z_T) = log q_0(z_0) - sum_t log |det df_t / dz_{t-1}|

  PlanarFlow        f(z) = z + u_hat tanh(w^T z + b)       Rezende & Mohamed (2015)
  InverseAutoregressiveFlow
                    [m, s] = MADE_t(z, h),  sigma = sigmoid(s),
                    f(z) = sigma * z + (1 - sigma) * m     Kingma et al. (2016)

Each is ONE example's distribution over `[L]` and a pytree (it passes through
`jax.jit`, `jax.vmap` and `jax.lax.stop_gradient`, which stops every
parameter, the networks' too), with `sample_and_log_prob(key, num_samples)`
as the model protocol asks (`vaejax.models`): its draws are the base's,
pushed through the maps, and log q comes from the base's noise and the
log-determinants, so it is exact where the base is narrow.

`mean` is the base's mean pushed through the maps: q's mean where the flow
is affine, and otherwise the image of the base's centre, not E_q[z] (which
has no closed form). Active units, the trainer's reconstruction images,
interpolations and traversals read it as they read a Gaussian's mean.

`log_prob(z)` needs the inverse: the IAF has it (each step by L passes of
its network, one more coordinate exact per pass; ill-conditioned where its
gates are small, `InverseAutoregressiveFlow.log_prob`); the planar map has
none in closed form, and says so in one line. The KL against any prior has no
closed form: the ELBO estimates it from the draws.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import checks
from vaejax import distributions

_LOG_2 = math.log(2.0)


_pytree = distributions.pytree
_lead = distributions.lead


class _Flow:
  """What a flow does with its `base` and its `transform(z)` -> (f(z), log |det|)."""

  def sample_and_log_prob(self, key, num_samples=None):
    """z_T `[L]` or `[K, L]`, and log q_0(z_0) - sum_t log |det|, `[]` or `[K]`."""
    z, log_q = self.base.sample_and_log_prob(key, num_samples)
    z, log_det = self.transform(z)
    return z, log_q - log_det

  def sample(self, key, num_samples=None):
    return self.sample_and_log_prob(key, num_samples)[0]

  @property
  def dim(self):
    return self.base.dim

  @property
  def mean(self):
    """The base's mean through the maps (module docstring)."""
    return self.transform(self.base.mean)[0]


def _check_base(name, base, function):
  if not isinstance(base, distributions.DiagonalGaussian):
    raise TypeError(f'{name}.{function}: the base is a {type(base).__name__}; '
                    'expected a DiagonalGaussian')
  base.check_one(f'{name}.{function}')


# --- Planar flows. ---


def _log_softplus(x):
  """log(softplus(x)), = x where softplus(x) = log1p(e^x) ~ e^x would underflow."""
  return jnp.where(x < -20.0, x, jnp.log(jax.nn.softplus(jnp.maximum(x, -20.0))))


def constrained_u(u, w):
  """u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a).

  Then w^T u_hat = m(w^T u) > -1, so the planar map is invertible
  (Rezende & Mohamed 2015, appendix A). `u`, `w`: `[..., L]`. Where w = 0
  the map is z + u h(b), a shift, and u_hat = u.
  """
  wu = jnp.sum(w * u, axis=-1, keepdims=True)
  sq = jnp.sum(jnp.square(w), axis=-1, keepdims=True)
  nonzero = sq > 0
  shift = (jax.nn.softplus(wu) - 1.0 - wu) / jnp.where(nonzero, sq, 1.0)
  return u + jnp.where(nonzero, shift, 0.0) * w


def planar(z, u, w, b):
  """f(z) = z + u_hat tanh(w^T z + b), and log |det df/dz| = log(1 + h'(a) w^T u_hat).

  z `[..., L]`; u (raw, `constrained_u` makes u_hat) and w `[L]`; b a
  scalar. Returns (f(z) `[..., L]`, log-determinant `[...]`). With
  h'(a) = 1 - tanh(a)^2 and w^T u_hat = softplus(w^T u) - 1, the
  determinant (w != 0) is tanh(a)^2 + (1 - tanh(a)^2) softplus(w^T u) =
  sech(a)^2 (sinh(a)^2 + softplus(w^T u)): terms >= 0, with no cancellation
  near -1. For |a| <= 1 it is taken in the second form in log space
  (2 log sech a + logaddexp(log sinh(a)^2, log softplus(w^T u))), finite
  however negative w^T u is; beyond, in the first (tanh(a)^2 >= 0.58),
  1 - tanh^2 as exp(2 (log 2 - logaddexp(a, -a))), exact where tanh(a)
  rounds to 1. Where w^T w underflows to 0 the map is a shift, log |det| 0,
  as `constrained_u` takes it.
  """
  a = jnp.sum(z * _lead(w, z), axis=-1) + b
  log_sech_sq = 2.0 * (_LOG_2 - jnp.logaddexp(a, -a))
  log_softplus_wu = _log_softplus(jnp.sum(w * u))
  near = jnp.abs(a) <= 1.0
  sinh_sq = jnp.square(jnp.sinh(jnp.where(near, a, 0.0)))
  positive = sinh_sq > 0
  log_inner = jnp.where(
      positive,
      jnp.logaddexp(jnp.log(jnp.where(positive, sinh_sq, 1.0)), log_softplus_wu),
      log_softplus_wu)
  far = jnp.log(jnp.square(jnp.tanh(a))
                + jnp.exp(log_sech_sq + jnp.where(near, 0.0, log_softplus_wu)))
  log_det = jnp.where(near, log_sech_sq + log_inner, far)
  # w = 0: the map is the shift z + u h(b), whose determinant is 1.
  log_det = jnp.where(jnp.sum(jnp.square(w)) > 0, log_det, 0.0)
  u_hat = constrained_u(u, w)
  return z + _lead(u_hat, z) * jnp.tanh(a)[..., None], log_det


@_pytree(['base', 'u', 'w', 'b'])
class PlanarFlow(_Flow):
  """q = the base pushed through T planar maps (Rezende & Mohamed 2015).

  Attributes:
    base: the `DiagonalGaussian` q_0 over `[L]`.
    u: `[T, L]` the maps' raw u, constrained by `constrained_u` (any value
      gives an invertible map).
    w: `[T, L]`.
    b: `[T]`.
  """
  base: distributions.DiagonalGaussian
  u: jax.Array
  w: jax.Array
  b: jax.Array

  def check_one(self, function):
    """Raises a one-line ValueError unless this is one example's flow."""
    _check_base('PlanarFlow', self.base, function)
    steps = jnp.shape(self.b)
    want = (*steps, self.dim)
    if (len(steps) != 1 or jnp.shape(self.u) != want
        or jnp.shape(self.w) != want):
      raise ValueError(
          f'PlanarFlow.{function} takes one example: got u '
          f'{checks.shape_of(self.u)}, w {checks.shape_of(self.w)}, b '
          f'{checks.shape_of(self.b)} for a base over [{self.dim}]; expected '
          '[T, L], [T, L] and [T] (use jax.vmap for a batch)')

  def transform(self, z):
    """(f_T o .. o f_1)(z) and the summed log |det|, for z `[..., L]`."""
    self.check_one('transform')
    log_det = jnp.zeros(jnp.shape(z)[:-1], jnp.result_type(z))
    for t in range(jnp.shape(self.b)[0]):
      z, step_log_det = planar(z, self.u[t], self.w[t], self.b[t])
      log_det = log_det + step_log_det
    return z, log_det

  def log_prob(self, z):
    raise NotImplementedError(
        'PlanarFlow has no log_prob(z): the planar map has no closed-form '
        'inverse; sample_and_log_prob gives log q at its own draws')


# --- Inverse autoregressive flows. ---


def made_masks(latent_dim, hidden_dims):
  """MADE's masks (Germain et al. 2015) for z `[L]` -> hidden layers -> `[L]`.

  Input k has degree k + 1 (1..L), a hidden unit j degree j mod L (0..L-1;
  degree 0 sees the context only), output k degree k + 1. A unit sees the
  inputs of degree up to its own, and output k the hidden units of degree
  below k + 1: output k depends on z_0..z_{k-1} only, so the Jacobian of
  the step is lower-triangular. Returns the input mask `[L, H_1]`, the
  hidden masks `[H_i, H_{i+1}]` and the output mask `[H_n, L]`, as NumPy
  booleans (constants of the traced program).
  """
  inputs = np.arange(1, latent_dim + 1)
  hidden = [np.arange(h) % latent_dim for h in hidden_dims]
  masks = [inputs[:, None] <= hidden[0][None, :]]
  masks += [a[:, None] <= b[None, :] for a, b in zip(hidden, hidden[1:])]
  masks.append(hidden[-1][:, None] < inputs[None, :])
  return masks


def _made(network, t, z, context, activation):
  """Step t's (m, s) at z `[..., L]`: the masked network of z and the context."""
  latent_dim = jnp.shape(z)[-1]
  kernels = network['kernels']
  masks = made_masks(latent_dim, [jnp.shape(k)[-1] for k in kernels])
  hidden = z @ (kernels[0][t] * masks[0])
  hidden = hidden + _lead(network['biases'][0][t], hidden)
  if 'context_kernel' in network:
    hidden = hidden + _lead(context @ network['context_kernel'][t], hidden)
  hidden = activation(hidden)
  for kernel, bias, mask in zip(kernels[1:], network['biases'][1:], masks[1:-1]):
    hidden = hidden @ (kernel[t] * mask)
    hidden = activation(hidden + _lead(bias[t], hidden))
  # m and s from one product: the output kernel is [mean | gate], each
  # half under the output mask.
  out = hidden @ (network['output_kernel'][t] * np.tile(masks[-1], (1, 2)))
  m, s = jnp.split(out + _lead(network['output_bias'][t], out), 2, axis=-1)
  return m, s


def iaf_step(network, t, z, context, activation):
  """z' = sigma * z + (1 - sigma) * m, sigma = sigmoid(s), and log |det| = sum log sigma.

  Kingma et al. (2016)'s gated update; the Jacobian is lower-triangular with
  diagonal sigma (`made_masks`).
  """
  m, s = _made(network, t, z, context, activation)
  sigma = jax.nn.sigmoid(s)
  return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)


def _iaf_step_inverse(network, t, y, context, activation):
  """The z with iaf_step(z) = y, one coordinate per pass: pass k sets
  z_k = (y_k - (1 - sigma_k) m_k) / sigma_k, where m_k and s_k read only
  z_{<k}, already exact; the coordinates not yet set are 0 (finite, and
  read by no output before theirs)."""
  positions = jnp.arange(jnp.shape(y)[-1])

  def one_pass(k, z):
    m, s = _made(network, t, z, context, activation)
    sigma = jax.nn.sigmoid(s)
    return jnp.where(positions == k, (y - (1.0 - sigma) * m) / sigma, z)

  return jax.lax.fori_loop(0, jnp.shape(y)[-1], one_pass, jnp.zeros_like(y))


@_pytree(['base', 'context', 'network'], ['activation'])
class InverseAutoregressiveFlow(_Flow):
  """q = the base pushed through T IAF steps, the order reversed between steps.

  Attributes:
    base: the `DiagonalGaussian` q_0 over `[L]`.
    context: `[C]` the encoder's context h (C may be 0).
    network: the T steps' MADE parameters, each array stacked over steps:
      'kernels' (`[T, L, H_1]`, then `[T, H_i, H_{i+1}]`), 'biases'
      (`[T, H_i]`), 'output_kernel' `[T, H_n, 2 L]` and 'output_bias'
      `[T, 2 L]` (m's columns, then s's), and where C > 0
      'context_kernel' `[T, C, H_1]`.
    activation: the hidden layers' nonlinearity (static).
  """
  base: distributions.DiagonalGaussian
  context: jax.Array
  network: dict
  activation: object = jax.nn.elu

  def check_one(self, function):
    """Raises a one-line ValueError unless this is one example's flow."""
    _check_base('InverseAutoregressiveFlow', self.base, function)
    first = jnp.shape(self.network['kernels'][0])
    if (jnp.ndim(self.context) != 1 or len(first) != 3
        or first[1] != self.dim or jnp.shape(self.network['output_bias']) != (
            first[0], 2 * self.dim)):
      raise ValueError(
          f'InverseAutoregressiveFlow.{function} takes one example: got context '
          f'{checks.shape_of(self.context)} and a first kernel '
          f'{checks.shape_of(self.network["kernels"][0])} for a base over '
          f'[{self.dim}]; expected [C] and [T, L, H] (use jax.vmap for a batch)')

  @property
  def num_steps(self):
    return jnp.shape(self.network['output_bias'])[0]

  def transform(self, z):
    """The T steps at z `[..., L]`, the order reversed between steps, and the
    summed log |det|."""
    self.check_one('transform')
    log_det = jnp.zeros(jnp.shape(z)[:-1], jnp.result_type(z))
    for t in range(self.num_steps):
      if t:
        z = z[..., ::-1]
      z, step_log_det = iaf_step(self.network, t, z, self.context, self.activation)
      log_det = log_det + step_log_det
    return z, log_det

  def inverse(self, z):
    """z_0 with transform(z_0) = (z, ...), and the summed log |det| there."""
    self.check_one('inverse')
    log_det = jnp.zeros(jnp.shape(z)[:-1], jnp.result_type(z))
    for t in reversed(range(self.num_steps)):
      below = _iaf_step_inverse(self.network, t, z, self.context, self.activation)
      log_det = log_det + iaf_step(self.network, t, below, self.context,
                                   self.activation)[1]
      z = below[..., ::-1] if t else below
    return z, log_det

  def log_prob(self, z):
    """log q(z) for z `[..., L]`, through the inverse (`inverse`).

    The inverse divides by sigma once per coordinate, and each
    coordinate's rounding reaches the later ones through the MADE: where
    the gates are small (sigma ~ 0.02) log q is good to about 1e-3 nats,
    where they are smaller still (sigma ~ 0.003) it can be off by nats or
    overflow (-inf there, though its gradient is not finite): fine for
    evaluating q at points, not for training through (the trainer's stl
    and dreg refuse the IAF).
    """
    distributions.check_point(self, z, 'log_prob')
    z0, log_det = self.inverse(z)
    value = self.base.log_prob(z0) - log_det
    overflowed = jnp.all(jnp.isfinite(z), axis=-1) & ~jnp.isfinite(value)
    return jnp.where(overflowed, -jnp.inf, value)
