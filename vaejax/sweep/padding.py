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

The encoder's output pads block by block, as its posterior head lays it out
(`vaejax.heads`): [mean; log_var] as two blocks, a full covariance's
[mean; log_var; the factor's entries below the diagonal, row by row] as
three, whose last is a prefix since rows 0..k-1 come first in either size.
The masking is the posterior and prior heads' `masked`.

`embed_latents` places a k-dimensional model's arrays into the L-dimensional
shapes (zeros elsewhere) and `extract_latents` cuts them back, so a member
starts as, and is checkpointed as, its standalone model.
"""

import itertools

import jax
import numpy as np

from vaejax import heads
from vaejax import models


def _layouts(latent_dim, max_latent_dim, blocks):
  """(small, large) block layouts an axis of a latent-sized array may have."""
  k, size = latent_dim, max_latent_dim
  own = [blocks] if blocks is not None else []
  library = [(heads.DiagonalHead(k).blocks, heads.DiagonalHead(size).blocks),
             (heads.FullCovarianceHead(k).blocks,
              heads.FullCovarianceHead(size).blocks)]
  return [((k,), (size,)), *own, *library]


def _latent_axis_pairs(small, large, layouts):
  """Per axis, (source, destination) slice pairs from `small` into `large` sizes:
  each block of the first layout of these totals, at the start of its larger self."""
  if small == large:
    return [(slice(None), slice(None))]
  for small_blocks, large_blocks in layouts:
    if (sum(small_blocks), sum(large_blocks)) == (small, large):
      pairs, start, destination = [], 0, 0
      for block, large_block in zip(small_blocks, large_blocks):
        pairs.append((slice(start, start + block),
                      slice(destination, destination + block)))
        start, destination = start + block, destination + large_block
      return pairs
  raise ValueError(f'cannot pad axis of size {small} to {large} for '
                   f'latent_dim {layouts[0][0][0]} -> {layouts[0][1][0]}')


def _latent_blocks(small_shape, large_shape, layouts):
  """(small index, large index) pairs of the blocks a k-latent array fills."""
  pairs = [_latent_axis_pairs(s, l, layouts)
           for s, l in zip(small_shape, large_shape)]
  for combo in itertools.product(*pairs):
    yield tuple(p[0] for p in combo), tuple(p[1] for p in combo)


def embed_latents(tree, like, latent_dim, max_latent_dim, blocks=None):
  """Places a `latent_dim` model's arrays into `max_latent_dim` shapes, zeros elsewhere.

  `like`: the padded tree, or its shapes (`jax.ShapeDtypeStruct`s).
  `blocks`: the posterior head's layouts at the two sizes, (small, large)
  (`models.Adapted.posterior_blocks`); by default the library's heads'.

  Works on any tree whose leaves mirror the parameters (the parameters, the
  optimizer state), on the host (NumPy arrays out): axes of size k become L, and an axis of the encoder's
  output (by its size) places each block of the head's layout at the start
  of the larger block: the mean and log-variance halves at 0 and L.
  """
  layouts = _layouts(latent_dim, max_latent_dim, blocks)

  def place(small, large):  # `large` may be a jax.ShapeDtypeStruct
    small = np.asarray(small)
    out = np.zeros(np.shape(large), large.dtype)
    for src, dst in _latent_blocks(small.shape, np.shape(large), layouts):
      out[dst] = small[src]
    return out

  return jax.tree.map(place, tree, like)


def extract_latents(tree, like, latent_dim, max_latent_dim, blocks=None):
  """The inverse of `embed_latents`: a padded tree cut to the shapes of `like`."""
  layouts = _layouts(latent_dim, max_latent_dim, blocks)

  def cut(large, small):
    large = np.asarray(large)
    out = np.zeros(np.shape(small), small.dtype)
    for src, dst in _latent_blocks(np.shape(small), large.shape, layouts):
      out[src] = large[dst]
    return out

  return jax.tree.map(cut, tree, like)


@jax.tree_util.register_pytree_node_class
class MaskedLatents:
  """A model with latent dimensions where `mask` is 0 switched off.

  There the posterior and the prior are N(0, 1) (no KL) and z is zeroed
  before the decoder (no input, no gradient). `model` goes through the
  adapter (`models.adapt`), so its encoder may return `(mean, log_var)` or a
  Gaussian, and a method of its own randomness gets the key it is given. A
  pytree of the model and the mask, so that its parameters can be stopped
  (the stl and dreg estimators, `vaejax.estimators`).
  """

  def __init__(self, model, mask):
    self._user_model = model
    self.model = models.adapt(model)
    self.mask = mask
    if self.model.has_prior:
      self.prior = self._prior

  def encode(self, x, *, key):
    q = self.model.encode(x, key)  # the key as given, as a standalone encoder's
    return self.model.masked_posterior(q, self.mask > 0)

  def _prior(self):
    return self.model.masked_prior(self.model.prior(), self.mask > 0)

  def log_likelihood(self, x, z, *, key):
    return self.model.log_likelihood(x, z * self.mask, key)

  def tree_flatten(self):
    return (self._user_model, self.mask), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(*children)
