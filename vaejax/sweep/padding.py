"""Padding a member's latent space to the sweep's largest, and masking it.

A member with latent_dim = k inside a model of L >= k latent dimensions masks
its dimensions k..L-1 (`MaskedLatents`):

  - the encoder's mean and log-variance there are set to 0: q = N(0, 1) = p,
    so those dimensions add exactly 0 to the KL; a full-covariance factor is
    the identity there (and 0 between them and the member's dimensions);
  - the prior is N(0, 1) there too: a learned diagonal prior's mean and
    log-variance, and each VampPrior component's, are set to 0;
  - z is multiplied by the mask before the decoder, so they feed nothing;
  - hence the weights that read or write them get zero gradients.

A full-covariance encoder's output, [mean; log_var; the factor's entries
below the diagonal, row by row], pads as three blocks: rows 0..k-1 of the
factor come first in either size, so its k (k - 1) / 2 entries are a prefix.

`embed_latents` places a k-dimensional model's arrays into the L-dimensional
shapes (zeros elsewhere) and `extract_latents` cuts them back, so a member
starts as, and is checkpointed as, its standalone model.
"""

import itertools

import jax
import jax.numpy as jnp

from vaejax import distributions
from vaejax import models


def _latent_axis_pairs(small, large, latent_dim, max_latent_dim):
  """Per axis, (source, destination) slice pairs from `small` into `large` sizes."""
  k, size = latent_dim, max_latent_dim
  if small == large:
    return [(slice(None), slice(None))]
  if (small, large) == (k, size):
    return [(slice(0, k), slice(0, k))]
  if (small, large) == (2 * k, 2 * size):  # [mean; log_var] halves
    return [(slice(0, k), slice(0, k)), (slice(k, 2 * k), slice(size, size + k))]
  below_k, below_size = k * (k - 1) // 2, size * (size - 1) // 2
  if (small, large) == (2 * k + below_k, 2 * size + below_size):  # full covariance
    return [(slice(0, k), slice(0, k)), (slice(k, 2 * k), slice(size, size + k)),
            (slice(2 * k, 2 * k + below_k), slice(2 * size, 2 * size + below_k))]
  raise ValueError(f'cannot pad axis of size {small} to {large} for '
                   f'latent_dim {k} -> {size}')


def _latent_blocks(small_shape, large_shape, latent_dim, max_latent_dim):
  """(small index, large index) pairs of the blocks a k-latent array fills."""
  pairs = [_latent_axis_pairs(s, l, latent_dim, max_latent_dim)
           for s, l in zip(small_shape, large_shape)]
  for combo in itertools.product(*pairs):
    yield tuple(p[0] for p in combo), tuple(p[1] for p in combo)


def embed_latents(tree, like, latent_dim, max_latent_dim):
  """Places a `latent_dim` model's arrays into `max_latent_dim` shapes, zeros elsewhere.

  `like`: the padded tree, or its shapes (`jax.ShapeDtypeStruct`s).

  Works on any tree whose leaves mirror the parameters (the parameters, the
  optimizer state): axes of size k become L, axes of size 2k (the encoder's
  mean and log-variance) become 2L with the halves at 0 and L.
  """

  def place(small, large):  # `large` may be a jax.ShapeDtypeStruct
    out = jnp.zeros(jnp.shape(large), large.dtype)
    for src, dst in _latent_blocks(jnp.shape(small), jnp.shape(large),
                                   latent_dim, max_latent_dim):
      out = out.at[dst].set(jnp.asarray(small)[src])
    return out

  return jax.tree.map(place, tree, like)


def extract_latents(tree, like, latent_dim, max_latent_dim):
  """The inverse of `embed_latents`: a padded tree cut to the shapes of `like`."""

  def cut(large, small):
    out = jnp.zeros_like(small)
    for src, dst in _latent_blocks(jnp.shape(small), jnp.shape(large),
                                   latent_dim, max_latent_dim):
      out = out.at[src].set(jnp.asarray(large)[dst])
    return out

  return jax.tree.map(cut, tree, like)


class MaskedLatents:
  """A model with latent dimensions where `mask` is 0 switched off.

  There the posterior and the prior are N(0, 1) (no KL) and z is zeroed
  before the decoder (no input, no gradient). `model` goes through the
  adapter (`models.adapt`), so its encoder may return `(mean, log_var)` or a
  Gaussian, and a method of its own randomness gets the key it is given.
  """

  def __init__(self, model, mask):
    self.model = models.adapt(model)
    self.mask = mask
    if self.model.has_prior:
      self.prior = self._prior

  def encode(self, x, *, key):
    q = self.model.encode(x, key)  # the key as given, as a standalone encoder's
    on = self.mask > 0
    if isinstance(q, distributions.FullCovarianceGaussian):
      both = on[:, None] & on[None, :]
      eye = jnp.eye(self.mask.shape[0], dtype=q.scale_tril.dtype)
      return distributions.FullCovarianceGaussian(
          jnp.where(on, q.mean, 0.0), jnp.where(both, q.scale_tril, eye))
    if isinstance(q, distributions.DiagonalGaussian):
      return distributions.DiagonalGaussian(jnp.where(on, q.mean, 0.0),
                                            jnp.where(on, q.log_var, 0.0))
    raise TypeError(f'a vectorised sweep cannot pad a {type(q).__name__} posterior')

  def _prior(self):
    p = self.model.prior()
    on = self.mask > 0
    if isinstance(p, distributions.StandardNormal):
      return p
    if isinstance(p, distributions.DiagonalGaussian):
      return distributions.DiagonalGaussian(jnp.where(on, p.mean, 0.0),
                                            jnp.where(on, p.log_var, 0.0))
    if isinstance(p, distributions.MixtureOfDiagonalGaussians):
      return distributions.MixtureOfDiagonalGaussians(
          jnp.where(on[None], p.means, 0.0), jnp.where(on[None], p.log_vars, 0.0),
          p.logits)
    raise TypeError(f'a vectorised sweep cannot pad a {type(p).__name__} prior')

  def log_likelihood(self, x, z, *, key):
    return self.model.log_likelihood(x, z * self.mask, key)
