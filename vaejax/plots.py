"""Pictures of a model: image grids of reconstructions, samples and the 2-D manifold."""

import jax
import jax.numpy as jnp
import numpy as np

# matplotlib is imported where it draws, not with vaejax: a binary that
# refuses its flags answers without loading it.


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


def save_grid(path, images, num_cols, *, value_range=(0.0, 1.0), title=None):
  """Writes an image grid as a PNG; values are clipped to `value_range`.

  One pixel per pixel; with a `title`, the grid is drawn under it at the
  same scale (on a canvas at least 240 pixels wide, and as wide as the
  title).
  """
  low, high = value_range
  grid = (np.clip(image_grid(images, num_cols), low, high) - low) / max(
      high - low, np.finfo(np.float32).tiny)
  # Grey levels; of other channel counts than 3, the first channel.
  pixels = grid if grid.shape[-1] == 3 else grid[..., 0]
  grey = dict(cmap='gray', vmin=0.0, vmax=1.0) if pixels.ndim == 2 else {}
  if title is None:
    from matplotlib import image as mpl_image  # pylint: disable=g-import-not-at-top
    mpl_image.imsave(path, pixels, **grey)
    return
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  # pixels; the canvas is wide enough for the title (about 5.5 pixels a
  # character at this size)
  dpi, title_height, min_width = 100, 30, max(240, int(5.5 * len(title)))
  height, width = pixels.shape[:2]
  fig_width, fig_height = max(width, min_width), height + title_height
  fig = Figure(figsize=(fig_width / dpi, fig_height / dpi), dpi=dpi)
  ax = fig.add_axes(((1 - width / fig_width) / 2, 0.0, width / fig_width,
                     height / fig_height))
  ax.imshow(pixels, interpolation='nearest', **grey)
  ax.axis('off')
  fig.suptitle(title, fontsize=7, y=1.0, va='top')
  fig.savefig(path, dpi=dpi)


def manifold_latents(num_per_side, dtype=jnp.float32):
  """`[n * n, 2]` latents on a grid through the inverse Gaussian CDF.

  The unit square's grid points (i + 0.5) / n are mapped through Phi^-1, so
  equal areas of the grid carry equal prior mass (Kingma & Welling, Fig. 4).
  Rows run from high z_2 (top) to low, columns from low z_1 to high.
  """
  coords = jax.scipy.special.ndtri(manifold_quantiles(num_per_side, dtype))
  return grid_of(coords, coords)


def manifold_quantiles(num_per_side, dtype=jnp.float32):
  """The grid's probabilities (i + 0.5) / n, i = 0..n-1."""
  return (jnp.arange(num_per_side, dtype=dtype) + 0.5) / num_per_side


def grid_of(z1_coords, z2_coords):
  """`[n * n, 2]`: rows from high z_2 (top) to low, columns from low z_1 to high."""
  z1, z2 = jnp.meshgrid(z1_coords, z2_coords[::-1])
  return jnp.stack([z1.ravel(), z2.ravel()], axis=-1)


def _figure(num_cols=1, width=6.0, height=4.0):
  # A Figure without pyplot: no global state, no display backend.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width * num_cols, height), layout='constrained')
  return fig, fig.subplots(1, num_cols, squeeze=False)[0]


def plot_bound_curves(path, curves, size_name='z'):
  """The ELBO against training examples seen, per latent size (log x).

  Kingma & Welling (2013), Figure 2: test ELBO solid, the training loss's
  running mean over each epoch (-train_loss) dashed; seeds are averaged.

  Args:
    path: the PNG to write.
    curves: {member: metrics records}, `sweep.Member`s: their `size` is the
      swept latent size.
    size_name: what the size is of, in the legend: 'z', or 'z_2'.
  """
  fig, (ax,) = _figure()
  latent_dims = sorted({m.size for m in curves})
  colors = _colors(len(latent_dims))
  for color, latent_dim in zip(colors, latent_dims):
    runs = [records for m, records in curves.items() if m.size == latent_dim]
    num_epochs = min(len(r) for r in runs)
    mean = lambda key: np.mean(
        [[rec[key] for rec in r[:num_epochs]] for r in runs], axis=0)
    examples = [rec['examples_seen'] for rec in runs[0][:num_epochs]]
    ax.plot(examples, mean('test_elbo'), color=color,
            label=f'{size_name} = {latent_dim}')
    ax.plot(examples, -mean('train_loss'), color=color, linestyle='--')
  ax.set_xscale('log')
  ax.set_xlabel('training examples seen')
  ax.set_ylabel('ELBO (nats)')
  ax.set_title('ELBO per latent size: test (solid), train running mean (dashed)')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(loc='lower right')
  fig.savefig(path, dpi=120)


def plot_learning_curves(path, curves):
  """Each run's test ELBO (solid) and -train_loss (dashed) against epochs.

  The epoch axis is logarithmic; the value axis starts at the lowest value
  after the first 2% of the longest run (at least its first epoch; all of a
  shorter run), so that the first epochs do not flatten the rest.

  Args:
    path: the PNG to write.
    curves: {run name: its metrics records}.
  """
  fig, (ax,) = _figure(width=7.0)
  skip = max(1, max(len(records) for records in curves.values()) // 50)
  low, high = np.inf, -np.inf
  for color, (name, records) in zip(_colors(len(curves)), curves.items()):
    epochs = [r['epoch'] for r in records]
    test = [r['test_elbo'] for r in records]
    train = [-r['train_loss'] for r in records]
    ax.plot(epochs, test, color=color, label=name)
    ax.plot(epochs, train, color=color, linestyle='--')
    after_skip = test[skip:] + train[skip:]
    low = min(low, min(after_skip or test + train))
    high = max(high, max(test + train))
  margin = 0.05 * (high - low) + 0.5
  ax.set_ylim(low - margin, high + margin)
  ax.set_xscale('log')
  ax.set_xlabel('epoch')
  ax.set_ylabel('nats')
  ax.set_title('test ELBO (solid); training objective, running mean (dashed)')
  ax.grid(True, alpha=0.3)
  # Beside the axes: inside, it hides the last epochs, where runs are told
  # apart.
  ax.legend(loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  fig.savefig(path, dpi=120)


def plot_by_latent_dim(path, rows, size_key='latent_dim'):
  """Test NLL (IWAE) and -ELBO, and active units, against the latent size.

  Args:
    path: the PNG to write.
    rows: dicts with `size_key`, test_nll_iwae, test_elbo and active_units
      (of the layer whose size `size_key` is); several seeds per latent
      size give mean and standard-deviation bars.
    size_key: the swept size: 'latent_dim', or 'top_latent_dim'.
  """
  fig, (left, right) = _figure(num_cols=2, width=5.0)
  latent_dims = sorted({r[size_key] for r in rows})

  def stats(key, sign=1.0):
    groups = [[sign * r[key] for r in rows if r[size_key] == k] for k in latent_dims]
    return ([np.mean(g) for g in groups],
            [np.std(g, ddof=1) if len(g) > 1 else 0.0 for g in groups])

  for key, sign, label in (('test_nll_iwae', 1.0, 'NLL (IWAE)'),
                           ('test_elbo', -1.0, '-ELBO')):
    mean, std = stats(key, sign)
    left.errorbar(latent_dims, mean, yerr=std, marker='o', capsize=3, label=label)
  _latent_axis(left, latent_dims)
  left.set_xlabel(size_key)
  left.set_ylabel('test nats')
  left.legend()
  left.grid(True, which='both', alpha=0.3)
  mean, std = stats('active_units')
  right.errorbar(latent_dims, mean, yerr=std, marker='o', capsize=3,
                 label='active units')
  right.plot(latent_dims, latent_dims, linestyle='--', color='grey',
             label='all units')
  _latent_axis(right, latent_dims)
  right.set_yscale('log')
  right.set_xlabel(size_key)
  right.set_ylabel('active units (Var_x E[z_u|x] > 0.01)')
  right.legend()
  right.grid(True, which='both', alpha=0.3)
  fig.savefig(path, dpi=120)


def plot_samples_by_latent_dim(path, sample_images, size_name='z'):
  """Side by side, each latent size's grid of prior samples (its first seed).

  Args:
    path: the PNG to write.
    sample_images: {`sweep.Member`: path of its samples.png}.
    size_name: what the swept size is of, in the titles: 'z', or 'z_2'.
  """
  firsts = {}
  for member in sorted(sample_images, key=lambda m: (m.size, m.seed)):
    firsts.setdefault(member.size, sample_images[member])
  fig, axes = _figure(num_cols=len(firsts), width=2.4, height=2.7)
  for ax, (latent_dim, image_path) in zip(axes, firsts.items()):
    from matplotlib import image as mpl_image  # pylint: disable=g-import-not-at-top
    ax.imshow(mpl_image.imread(image_path))
    ax.set_title(f'{size_name} = {latent_dim}')
    ax.axis('off')
  fig.savefig(path, dpi=120)


def _latent_axis(ax, latent_dims):
  """A log x-axis ticked at the latent sizes themselves."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.set_xscale('log')
  ax.xaxis.set_major_locator(ticker.FixedLocator(latent_dims))
  ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(k) for k in latent_dims]))
  ax.xaxis.set_minor_locator(ticker.NullLocator())


def _colors(num):
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  return [colormaps['viridis'](x) for x in np.linspace(0.0, 0.9, num)]
