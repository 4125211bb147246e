"""Using what was trained: vaejax.load_run and the batch helpers."""

import functools
import hashlib
import pathlib
import subprocess
import sys
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
from matplotlib import colormaps
from matplotlib import image as mpl_image
import numpy as np
import pytest

import vaejax
from vaejax import artifacts
from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import data
from vaejax import evaluation
from vaejax import nets
from vaejax import rng
from vaejax import train
import pngs  # pylint: disable=g-bad-import-order


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A tiny finished run on the linear-Gaussian data."""
  workdir = tmp_path_factory.mktemp('run')
  config = config_lib.TrainConfig(
      workdir=str(workdir), dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(16,), latent_dim=3, batch_size=100, num_epochs=2,
      eval_iwae_samples=20, progress=False)
  train.train_and_evaluate(config)
  return workdir


def digest_of(workdir):
  """SHA-256 over every file's name, bytes and modification time."""
  h = hashlib.sha256()
  for path in sorted(pathlib.Path(workdir).rglob('*')):
    if path.is_file():
      h.update(str(path).encode() + path.read_bytes()
               + str(path.stat().st_mtime_ns).encode())
  return h.hexdigest()


def test_a_loaded_run_gives_its_results_again(finished):
  run = vaejax.load_run(finished)
  assert (run.epoch, run.results['final_epoch']) == (2, 2)
  config = run.config
  dataset = data.load(config.dataset)
  test_x = train.eval_inputs(dataset.test, config, 1)
  keys = rng.RunKeys.of(config)
  terms = jax.jit(evaluation.make_evaluate(lambda m: m, config.eval_batch_size))(
      run.model, test_x, keys.test)
  np.testing.assert_allclose(terms.elbo, run.results['test_elbo'], rtol=1e-6)
  bounds = vaejax.log_prob(run.model, test_x, keys.iwae, config.eval_iwae_samples)
  assert bounds.shape == (test_x.shape[0],)
  np.testing.assert_allclose(-jnp.mean(bounds), run.results['test_nll_iwae'],
                             rtol=1e-6)
  # An earlier epoch's parameters are other parameters.
  first = vaejax.load_run(finished, params=1)
  assert first.epoch == 1
  assert not np.array_equal(nnx.state(first.model, nnx.Param)['decoder']['layers'][0]['kernel'][...],
                            nnx.state(run.model, nnx.Param)['decoder']['layers'][0]['kernel'][...])


def test_load_run_takes_no_lock_and_writes_nothing(finished):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from vaejax import files; '
       f'lock = files.WorkdirLock({str(finished)!r}); print("held", flush=True); '
       'time.sleep(3600)'], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = digest_of(finished)
    run = vaejax.load_run(finished, params='last')
    assert run.epoch == 2
    assert digest_of(finished) == before
  finally:
    holder.kill()
    holder.wait()


def test_what_load_run_cannot_load_is_refused_in_one_line(finished, tmp_path):
  cases = [
      (tmp_path, {}, config_lib.ConfigError, 'holds no vaejax run'),
      (finished, {'params': 7}, checkpoint.CheckpointError,
       'has no checkpoint of epoch 7; it has epochs 1, 2'),
      (finished, {'params': 'best'}, config_lib.ConfigError, "params='best' is not"),
  ]
  for workdir, kwargs, error, message in cases:
    with pytest.raises(error, match=message) as caught:
      vaejax.load_run(workdir, **kwargs)
    assert '\n' not in str(caught.value)


def test_decoding_the_posterior_mean_is_the_mean_reconstruction():
  # A linear decoder: E_q[E[x|z]] = E[x|E_q z], so reconstructions at many
  # draws average to the decoded posterior mean, within Monte Carlo error.
  model = nets.LinearVAE((6, 1, 1), 2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (5, 6, 1, 1))
  q = vaejax.encode(model, x)
  assert q.mean.shape == q.log_var.shape == (5, 2)
  decoded = vaejax.decode(model, q.mean)
  draws = jnp.stack([vaejax.reconstruct(model, x, jax.random.key(k))
                     for k in range(400)])
  spread = jnp.std(draws, axis=0) / np.sqrt(400)
  assert jnp.all(jnp.abs(jnp.mean(draws, axis=0) - decoded) < 5 * spread + 1e-6)
  # Chunking changes nothing.
  np.testing.assert_allclose(vaejax.reconstruct(model, x, jax.random.key(3), chunk_size=2),
                             vaejax.reconstruct(model, x, jax.random.key(3)), rtol=1e-6,
                             atol=1e-6)


def test_samples_come_from_the_models_own_prior():
  num = 4000
  # Two layers: z_1 ~ N(a, A A^T + tau^2 I).
  chain = vaejax.make_linear_gaussian_chain(jax.random.key(0), 6, (3, 2))
  latents, images = vaejax.sample(chain, jax.random.key(1), num)
  assert latents.shape == (num, 3) and images is None
  std = jnp.sqrt(jnp.diag(chain.top_weight @ chain.top_weight.T)
                 + jnp.exp(chain.top_log_var))
  assert jnp.all(jnp.abs(latents.mean(0) - chain.top_bias) < 4 * std / np.sqrt(num))
  # A VampPrior: the mean of its mixture of posteriors.
  vamp = nets.MLPVAE((4, 4, 1), 2, hidden_dims=(8,), prior='vamp',
                     vamp_components=3, rngs=nnx.Rngs(0))
  # Its posteriors, and so its components, moved off N(0, I): means near
  # (2, -1), variances near e^-2.
  last = vamp.encoder.layers[-1]
  last.bias.set_value(last.bias[...] + jnp.array([2.0, -1.0, -2.0, -2.0]))
  latents, images = vaejax.sample(vamp, jax.random.key(2), num)
  assert images.shape == (num, 4, 4, 1)
  p = vamp.prior()
  mean = jnp.mean(p.means, axis=0)
  second = jnp.mean(jnp.exp(p.log_vars) + p.means ** 2, axis=0)
  std = jnp.sqrt(second - mean ** 2)
  assert jnp.all(jnp.abs(latents.mean(0) - mean) < 4 * std / np.sqrt(num))
  # A prior far from N(0, I) would fail this test: its means are not 0.
  assert jnp.any(jnp.abs(mean) > 8 * std / np.sqrt(num))


def test_log_prob_approaches_the_exact_log_likelihood():
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 3, correlation=0.6)
  x = model.sample(jax.random.key(1), 50)
  exact = jax.vmap(model.log_marginal)(x)
  gaps = [float(jnp.mean(exact - vaejax.log_prob(model, x, jax.random.key(2), k)))
          for k in (1, 10, 1000)]
  assert gaps[0] > gaps[1] > gaps[2] > -1e-3
  assert gaps[0] > 0.1 and gaps[2] < 0.1 * gaps[0]


def test_interpolations_and_traversals_decode_the_posterior_means():
  model = nets.MLPVAE((4, 4, 1), 3, hidden_dims=(8,), rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 1))
  means = vaejax.encode(model, x).mean
  for spherical in (False, True):
    path = vaejax.interpolate(model, x[:2], x[2:], 5, spherical=spherical)
    assert path.shape == (2, 5, 4, 4, 1)
    np.testing.assert_allclose(path[:, 0], vaejax.decode(model, means[:2]), atol=1e-5)
    np.testing.assert_allclose(path[:, -1], vaejax.decode(model, means[2:]), atol=1e-5)
  values = jnp.array([-2.0, 0.0, 2.0])
  images = vaejax.traverse(model, x, 1, values)
  assert images.shape == (4, 3, 4, 4, 1)
  z = means.at[:, 1].set(2.0)
  np.testing.assert_allclose(images[:, 2], vaejax.decode(model, z), atol=1e-5)
  with pytest.raises(ValueError, match='dim 3 is not a dimension of z, which has 3'):
    vaejax.traverse(model, x, 3, values)
  with pytest.raises(ValueError, match=r'decode takes latents \[N, L\]; got \(3,\)'):
    vaejax.decode(model, means[0])
  with pytest.raises(ValueError, match='interpolate: x_a .* and x_b .* must have one shape'):
    vaejax.interpolate(model, x[:2], x[:3], 5)


def test_encode_arrays_are_the_batched_posteriors_fields():
  """encode_arrays equals `encode`'s batched fields, for the diagonal and the
  full covariance, at any chunk size; a posterior without a mean cannot be
  interpolated, in one line."""
  x = jax.random.uniform(jax.random.key(1), (5, 4, 4, 1))
  for posterior, fields in (('diagonal', ['log_var', 'mean']),
                            ('full_covariance', ['mean', 'scale_tril'])):
    model = nets.MLPVAE((4, 4, 1), 3, hidden_dims=(8,), posterior=posterior,
                        rngs=nnx.Rngs(0))
    q = vaejax.encode(model, x)
    for chunk_size in (2, 1024):
      arrays = vaejax.encode_arrays(model, x, chunk_size=chunk_size)
      assert sorted(arrays) == fields
      for name in fields:
        np.testing.assert_allclose(arrays[name], getattr(q, name), rtol=1e-6,
                                   atol=1e-7)

  class Shifted(NamedTuple):
    """N(shift, I) without a `mean`: a posterior of the protocol's minimum."""
    shift: jax.Array

    def sample_and_log_prob(self, key, num_samples=None):
      return vaejax.StandardNormal(3).sample_and_log_prob(key, num_samples)

  class NoMean:
    def encode(self, x):
      return Shifted(jnp.mean(x))

    def log_likelihood(self, x, z):
      return -jnp.sum(jnp.square(x)) - jnp.sum(z)

    def mean_image(self, z):
      return jnp.zeros((4, 4, 1)) + jnp.sum(z)

  with pytest.raises(TypeError, match="interpolate needs the posterior's mean"):
    vaejax.interpolate(NoMean(), x[:2], x[2:4], 3)


def test_generate_and_embed_write_what_the_helpers_compute(tmp_path):
  # A user's labelled file: 8x8 binary images, labels 0, 1, 2.
  gen = np.random.default_rng(0)
  splits = {'train': 300, 'valid': 50, 'test': 50}
  arrays = {s: gen.random((n, 8, 8)) < 0.3 for s, n in splits.items()}
  arrays.update({f'{s}_labels': gen.integers(0, 3, n) for s, n in splits.items()})
  np.savez(tmp_path / 'mine.npz', **arrays)
  workdir = tmp_path / 'run'
  config = config_lib.TrainConfig(
      workdir=str(workdir), dataset=str(tmp_path / 'mine.npz'), hidden_dims=(16,),
      latent_dim=3, batch_size=50, num_epochs=1, eval_iwae_samples=5,
      progress=False)
  train.train_and_evaluate(config)
  flags = artifacts.GenerateFlags(num_samples=12, num_reconstructions=5,
                                  num_interpolations=3, interpolation_steps=4)
  written = artifacts.generate(workdir, seed=3, flags=flags, log=lambda *_: None)
  written += artifacts.embed(workdir, split='valid', log=lambda *_: None)
  out = workdir / 'generated'
  assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
  load = lambda name: dict(np.load(out / f'{name}.npz'))
  model, key = vaejax.load_run(workdir).model, jax.random.key(3)
  test_x = arrays['test'][..., None].astype(np.float32)
  # Each array is what the helper gives for the same key, example and size.
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  samples = load('samples')
  drawn = vaejax.sample(model, jax.random.fold_in(key, 0), 12)
  close(samples['latents'], drawn.latents)
  close(samples['images'], drawn.images)
  assert samples['images'].shape == (12, 8, 8, 1)
  rebuilt = load('reconstructions')
  close(rebuilt['inputs'], test_x[:5])
  close(rebuilt['reconstructions'],
        vaejax.reconstruct(model, test_x[:5], jax.random.fold_in(key, 1)))
  paths = load('interpolations')
  assert paths['images'].shape == (3, 4, 8, 8, 1)
  close(paths['x_a'], test_x[0:6:2])
  close(paths['images'][:, 0], vaejax.decode(model, vaejax.encode(model, test_x[0:6:2]).mean))
  close(paths['images'][:, -1], vaejax.decode(model, vaejax.encode(model, test_x[1:6:2]).mean))
  walks = load('traversals')
  assert walks['images'].shape == (3, 9, 8, 8, 1)  # z has 3 of the 10 dims
  close(walks['values'], np.linspace(-3, 3, 9))
  close(walks['images'][2], vaejax.traverse(model, test_x[:1], 2, walks['values'])[0])
  embedded = load('embeddings_valid')
  valid_x = arrays['valid'][..., None].astype(np.float32)
  q = vaejax.encode(model, valid_x)
  close(embedded['mean'], q.mean)
  close(embedded['log_var'], q.log_var)
  np.testing.assert_array_equal(embedded['labels'], arrays['valid_labels'])
  # The scatter plot draws a point of each label's colour; the grids decode
  # at one pixel per pixel under their titles.
  pngs.assert_figure(out / 'embeddings_valid.png', inches=(6.0, 5.0),
                     colours=[colormaps['tab10'](i) for i in range(3)])
  grid = mpl_image.imread(out / 'traversals.png')
  assert grid.shape[0] == 30 + 3 * 9 - 1, grid.shape  # title, 3 rows of 8 + 1


def test_a_sweep_member_with_its_best_epoch_loads(tmp_path):
  from vaejax import sweep  # pylint: disable=g-import-not-at-top
  config = config_lib.TrainConfig(
      workdir=str(tmp_path), dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(16,), batch_size=100, num_epochs=3, eval_iwae_samples=10,
      final_model='best_valid', learning_rate=0.05, progress=False)
  sweep.run(config, sweep.SweepFlags(latent_dims=(2,), seeds=(0,)),
            log=lambda *_: None)
  (member,) = [p for p in tmp_path.iterdir() if p.is_dir()]
  run = vaejax.load_run(member)
  assert run.epoch == run.results['final_epoch']
  test_x = train.eval_inputs(data.load(config.dataset).test, run.config, 1)
  bounds = vaejax.log_prob(run.model, test_x, rng.RunKeys.of(run.config).iwae, 10)
  np.testing.assert_allclose(-jnp.mean(bounds), run.results['test_nll_iwae'],
                             rtol=1e-6)
