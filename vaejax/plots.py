"""Pictures of a model: image grids of reconstructions, samples and the 2-D manifold."""

import jax
import jax.numpy as jnp
from matplotlib import image as mpl_image
import numpy as np


def image_grid(images, num_cols):
  """Tiles `[N, H, W, C]` images into one `[rows * (H+1) - 1, ...]` picture.

  Rows are filled left to right; a one-pixel white line separates images.
  """
  images = np.asarray(images, np.float32)
  num, height, width, channels = images.shape
  num_rows = -(-num // num_cols)
  grid = np.ones((num_rows * (height + 1) - 1, num_cols * (width + 1) - 1,
                  channels), np.float32)
  for i, img in enumerate(images):
    row, col = divmod(i, num_cols)
    grid[row * (height + 1):row * (height + 1) + height,
         col * (width + 1):col * (width + 1) + width] = img
  return grid


def save_grid(path, images, num_cols, *, value_range=(0.0, 1.0)):
  """Writes an image grid as a PNG; values are clipped to `value_range`."""
  low, high = value_range
  grid = (np.clip(image_grid(images, num_cols), low, high) - low) / (high - low)
  if grid.shape[-1] == 1:
    mpl_image.imsave(path, grid[..., 0], cmap='gray', vmin=0.0, vmax=1.0)
  else:
    mpl_image.imsave(path, grid)


def manifold_latents(num_per_side, dtype=jnp.float32):
  """`[n * n, 2]` latents on a grid through the inverse Gaussian CDF.

  The unit square's grid points (i + 0.5) / n are mapped through Phi^-1, so
  equal areas of the grid carry equal prior mass (Kingma & Welling, Fig. 4).
  Rows run from high z_2 (top) to low, columns from low z_1 to high.
  """
  quantiles = (jnp.arange(num_per_side, dtype=dtype) + 0.5) / num_per_side
  coords = jax.scipy.special.ndtri(quantiles)
  z1, z2 = jnp.meshgrid(coords, coords[::-1])
  return jnp.stack([z1.ravel(), z2.ravel()], axis=-1)
