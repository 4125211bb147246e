"""What a trained run makes: pictures and arrays of its model.

  generate(workdir)       samples, reconstructions, interpolations and latent
                          traversals, each a PNG and an .npz of its arrays
  embed(workdir, 'test')  every example's posterior (mean, log-variance) in an
                          .npz, and a scatter plot of the means by label

Both read the run with `vaejax.load_run` (nothing in the run is changed) and
write into `output_dir`, by default the folder `generated` inside the run's
workdir. `experiments.generate` and `experiments.embed` are their binaries.
Bad arguments are refused in one line (`config.ConfigError`) before any
data is loaded.
"""

import dataclasses
import pathlib

import jax
import numpy as np

from vaejax import checks
from vaejax import config as config_lib
from vaejax import data
from vaejax import inference
from vaejax import plots
from vaejax import runs
from vaejax import train

OUTPUT_FOLDER = 'generated'
SPLITS = ('train', 'valid', 'test')


_field = checks.flag_field


@dataclasses.dataclass(frozen=True)
class GenerateFlags:
  """What `generate` draws and how many (experiments.generate's flags)."""
  num_samples: int = _field(64, 'Draws of the model\'s prior, decoded.')
  num_reconstructions: int = _field(
      16, 'Examples of --split reconstructed (the first ones).')
  num_interpolations: int = _field(
      8, 'Interpolations, row i from example 2i to 2i + 1 of --split.')
  interpolation_steps: int = _field(
      10, 'Points of each interpolation, its two ends included.')
  spherical: bool = _field(
      False, 'Interpolate along the great circle between the posterior means '
      '(else the straight line).')
  traverse_dims: int = _field(
      10, 'Latent dimensions traversed, the first ones (at most z\'s size).')
  traverse_values: int = _field(9, 'Values each traversed dimension takes.')
  traverse_range: float = _field(
      3.0, 'The traversed values run from -this to +this.')
  traverse_example: int = _field(
      0, 'The example of --split whose posterior mean is traversed.')


def _rows_over_rows(top, bottom, num_cols, blank):
  """Rows of `num_cols` of `top` each over the same row of `bottom`, the
  last rows filled up with `blank` images."""
  fill = -len(top) % num_cols
  pad = lambda a: np.concatenate([a, np.full((fill, *a.shape[1:]), blank, a.dtype)])
  top, bottom = (pad(a).reshape(-1, num_cols, *a.shape[1:]) for a in (top, bottom))
  return np.stack([top, bottom], 1).reshape(-1, *top.shape[2:])


def _output_dir(workdir, output_dir):
  path = pathlib.Path(output_dir or pathlib.Path(workdir) / OUTPUT_FOLDER)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise config_lib.ConfigError(f'cannot write to {path} ({e.strerror})') from None
  return path


def _check_split(split):
  if split not in SPLITS:
    raise config_lib.ConfigError(f'--split must be one of {", ".join(SPLITS)}; '
                                 f'got {split!r}')


def _split_size(config, split):
  return dict(zip(SPLITS, config.spec.sizes))[split]


def _inputs(config, split, tfds_data_dir, tfds_manual_dir):
  """(the split as model inputs, its labels or None, the pixels' value range)."""
  dataset = data.load(config.dataset,
                      tfds_data_dir=tfds_data_dir or config.tfds_data_dir,
                      tfds_manual_dir=tfds_manual_dir or config.tfds_manual_dir,
                      num_validation=config.num_validation)
  index = SPLITS.index(split)
  stored = (dataset.train, dataset.valid, dataset.test)[index]
  # The evaluation inputs of the split, binarized (where dynamic) by the
  # run's fixed evaluation key (`train.eval_inputs`: 0 valid, 1 test, 2 train).
  x = np.asarray(train.eval_inputs(stored, config, (2, 0, 1)[index]))
  labels = None if dataset.labels is None else dataset.labels[index]
  if config.spec.pixels == 'real':
    value_range = (float(stored.min()), float(stored.max()))
  else:
    value_range = (0.0, 1.0)
  return x, labels, value_range


def check_generate(config, split, flags):
  """One-line `ConfigError` where `flags` do not fit the run of `config`."""
  for name in ('num_samples', 'num_reconstructions', 'num_interpolations',
               'interpolation_steps', 'traverse_dims', 'traverse_values'):
    if getattr(flags, name) < 1:
      raise config_lib.ConfigError(f'--{name} must be at least 1, got '
                                   f'{getattr(flags, name)}')
  if flags.interpolation_steps < 2:
    raise config_lib.ConfigError('--interpolation_steps must be at least 2 (its '
                                 f'two ends), got {flags.interpolation_steps}')
  if not flags.traverse_range > 0:
    raise config_lib.ConfigError('--traverse_range must be positive, got '
                                 f'{flags.traverse_range}')
  size = _split_size(config, split)
  needed = {'--num_reconstructions': flags.num_reconstructions,
            '--num_interpolations (two examples each)': 2 * flags.num_interpolations,
            '--traverse_example (an index)': flags.traverse_example + 1}
  for what, count in needed.items():
    if count > size:
      raise config_lib.ConfigError(
          f'{what} needs {count} examples of the {split} split, which has {size}')
  if flags.traverse_example < 0:
    raise config_lib.ConfigError('--traverse_example must be an index of the '
                                 f'{split} split, got {flags.traverse_example}')


def generate(workdir, *, output_dir=None, params='final', split='test', seed=0,
             flags=GenerateFlags(), tfds_data_dir=None, tfds_manual_dir=None,
             log=print):
  """Writes samples, reconstructions, interpolations and traversals of a run.

  Each picture is a PNG and its arrays an .npz of the same name, in
  `output_dir`: samples (`num_samples` ancestral draws from the model's own
  prior), reconstructions (the first `num_reconstructions` examples of
  `split` over E[x|z] at one z ~ q(z|x) each), interpolations (rows from
  example 2i to 2i + 1 of `split` through `interpolation_steps` points
  between their posterior means, linear or `spherical`; the examples at the
  ends) and traversals (example `traverse_example`'s posterior mean, each of
  its first `traverse_dims` dimensions set in turn to `traverse_values`
  values from -`traverse_range` to +`traverse_range`). Draws come from
  `seed`.

  Returns:
    The paths written.
  """
  _check_split(split)
  check_generate(runs.read_config(workdir), split, flags)
  run = runs.load_run(workdir, params=params)
  out = _output_dir(workdir, output_dir)
  x, _, value_range = _inputs(run.config, split, tfds_data_dir, tfds_manual_dir)
  model, key = run.model, jax.random.key(seed)
  save = lambda name, images, num_cols, title: plots.save_grid(
      out / name, images, num_cols, value_range=value_range, title=title)
  written = []

  def write(name, picture, num_cols, title, **arrays):
    save(f'{name}.png', picture, num_cols, title)
    np.savez(out / f'{name}.npz', **{k: np.asarray(v) for k, v in arrays.items()})
    written.extend([out / f'{name}.png', out / f'{name}.npz'])

  drawn = inference.sample(model, jax.random.fold_in(key, 0), flags.num_samples)
  write('samples', drawn.images, 8, f'{flags.num_samples} draws of the prior, '
        'E[x|z]', latents=drawn.latents, images=drawn.images)

  originals = x[:flags.num_reconstructions]
  rebuilt = inference.reconstruct(model, originals, jax.random.fold_in(key, 1))
  pictures = _rows_over_rows(np.asarray(originals), np.asarray(rebuilt),
                             cols := min(flags.num_reconstructions, 16),
                             blank=value_range[1])
  write('reconstructions', pictures, cols, f'{split} examples (rows 1, 3, ...) '
        'over E[x|z], z ~ q(z|x)', inputs=originals, reconstructions=rebuilt)

  n = flags.num_interpolations
  x_a, x_b = x[0:2 * n:2], x[1:2 * n:2]
  path = inference.interpolate(model, x_a, x_b, flags.interpolation_steps,
                               spherical=flags.spherical)
  rows_of = np.concatenate([x_a[:, None], np.asarray(path), x_b[:, None]], 1)
  kind = 'spherical' if flags.spherical else 'linear'
  write('interpolations', rows_of.reshape(-1, *x.shape[1:]),
        flags.interpolation_steps + 2, f'{split} examples at the ends, E[x|z] '
        f'between their posterior means ({kind})', x_a=x_a, x_b=x_b,
        images=path)

  example = x[flags.traverse_example:flags.traverse_example + 1]
  dims = list(range(min(flags.traverse_dims, run.config.latent_dim)))
  values = np.linspace(-flags.traverse_range, flags.traverse_range,
                       flags.traverse_values, dtype=np.float32)
  images = np.stack([np.asarray(inference.traverse(model, example, d, values))[0]
                     for d in dims])
  write('traversals', images.reshape(-1, *x.shape[1:]), flags.traverse_values,
        f'{split} example {flags.traverse_example}: row d sets z_d from '
        f'{-flags.traverse_range:g} to {flags.traverse_range:g}',
        input=example[0], dims=np.asarray(dims), values=values, images=images)
  for path_written in written[::2]:
    log(f'wrote {path_written}')
  return written


def embed(workdir, *, split='test', output_dir=None, params='final',
          tfds_data_dir=None, tfds_manual_dir=None, log=print):
  """Writes every example's q(z|x) of `split`, and a scatter plot of its means.

  `embeddings_<split>.npz` holds the posterior's arrays, batched over the
  examples (`inference.encode_arrays`: `mean` and `log_var` for the
  diagonal Gaussian, `mean` and `scale_tril` for the full covariance, a
  flow's `base_mean`, `base_log_var` and `mean`), and `labels` where the
  dataset has them. `embeddings_<split>.png` plots the means (their first two principal
  components where z has more than two dimensions), coloured by label.

  Returns:
    The paths written.
  """
  _check_split(split)
  run = runs.load_run(workdir, params=params)
  out = _output_dir(workdir, output_dir)
  x, labels, _ = _inputs(run.config, split, tfds_data_dir, tfds_manual_dir)
  arrays = {name: np.asarray(a)
            for name, a in inference.encode_arrays(run.model, x).items()}
  if labels is not None:
    arrays['labels'] = np.asarray(labels)
  npz = out / f'embeddings_{split}.npz'
  np.savez(npz, **arrays)
  png = out / f'embeddings_{split}.png'
  plot_embedding(png, arrays['mean'], labels,
                 f'posterior means of {len(x):,} {split} examples')
  log(f'wrote {npz}')
  log(f'wrote {png}')
  return [npz, png]


def principal_components(z, num=2):
  """(`[N, num]` the centred rows of `z` on its first `num` principal axes,
  `[num]` the fraction of the variance each one carries)."""
  centred = z - z.mean(axis=0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  variance = s ** 2
  return centred @ vt[:num].T, variance[:num] / max(variance.sum(), 1e-30)


def plot_embedding(path, means, labels, title):
  """A scatter plot of `means` `[N, L]`: z itself for L = 2 (z against the
  label for L = 1), else its first two principal components."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  means = np.asarray(means, np.float64)
  fig = Figure(figsize=(6.0, 5.0), layout='constrained')
  ax = fig.subplots()
  if means.shape[1] == 1:
    y = np.zeros(len(means)) if labels is None else np.asarray(labels, np.float64)
    coords, names = np.stack([means[:, 0], y], 1), ('z_1', 'label')
  elif means.shape[1] == 2:
    coords, names = means, ('z_1', 'z_2')
  else:
    coords, share = principal_components(means)
    names = tuple(f'principal component {i + 1} ({100 * s:.0f}% of the variance)'
                  for i, s in enumerate(share))
    title += f' (z has {means.shape[1]} dimensions)'
  if labels is None:
    ax.scatter(coords[:, 0], coords[:, 1], s=3, alpha=0.5, linewidths=0)
  else:
    from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
    classes = np.unique(labels)
    colours = colormaps['tab10' if len(classes) <= 10 else 'viridis']
    for i, c in enumerate(classes):
      chosen = labels == c
      ax.scatter(coords[chosen, 0], coords[chosen, 1], s=3, alpha=0.6,
                 linewidths=0, label=str(c),
                 color=colours(i if len(classes) <= 10 else i / len(classes)))
    legend = ax.legend(title='label', markerscale=4, fontsize=7, loc='best')
    for handle in legend.legend_handles:  # the legend's markers opaque
      handle.set_alpha(1.0)
  ax.set_xlabel(names[0])
  ax.set_ylabel(names[1])
  ax.set_title(title, fontsize=9)
  fig.savefig(path, dpi=120)
