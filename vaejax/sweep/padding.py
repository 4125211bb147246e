"""Padding a member's latent space to the sweep's largest, and masking it.

A member with latent_dim = k inside a model of L >= k latent dimensions masks
its dimensions k..L-1 (`MaskedLatents`):

  - the encoder's mean and log-variance there are set to 0: q = N(0, 1) = p,
    so those dimensions add exactly 0 to the KL;
  - z is multiplied by the mask before the decoder, so they feed nothing;
  - hence the weights that read or write them get zero gradients.

`embed_latents` places a k-dimensional model's arrays into the L-dimensional
shapes (zeros elsewhere) and `extract_latents` cuts them back, so a member
starts as, and is checkpointed as, its standalone model.
"""

import itertools

import jax
import jax.numpy as jnp

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

  Works on any tree whose leaves mirror the parameters (the parameters, the
  optimizer state): axes of size k become L, axes of size 2k (the encoder's
  mean and log-variance) become 2L with the halves at 0 and L.
  """

  def place(small, large):
    out = jnp.zeros_like(large)
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

  There the posterior is the prior N(0, 1) (mean 0, log-variance 0: no KL)
  and z is zeroed before the decoder (no input, no gradient). A `key` given
  to a method reaches the model's method unchanged, if it takes one.
  """

  def __init__(self, model, mask):
    self.model = model
    self.mask = mask

  def encode(self, x, *, key=None):
    mean, log_var = _call(self.model.encode, x, key=key)
    on = self.mask > 0
    return jnp.where(on, mean, 0.0), jnp.where(on, log_var, 0.0)

  def log_likelihood(self, x, z, *, key=None):
    return _call(self.model.log_likelihood, x, z * self.mask, key=key)


def _call(method, *args, key):
  return method(*args, key=key) if models.takes_key(method) else method(*args)
