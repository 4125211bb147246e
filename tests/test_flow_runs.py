"""Flow posteriors through the trainer, the sweep, load_run and the binaries."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

import vaejax
from vaejax import artifacts
from vaejax import config as config_lib
from vaejax import sweep
from vaejax import train
from vaejax.sweep import members as members_lib

_CONFIG = functools.partial(
    config_lib.TrainConfig, dataset='linear_gaussian', likelihood='gaussian',
    hidden_dims=(8,), batch_size=100, eval_iwae_samples=4, analytic_kl=False,
    progress=False)


def test_a_vectorised_sweep_trains_planar_members_as_alone(tmp_path):
  """Over two epochs, the latent-size-3 member of a vectorised sweep over 1
  and 3 ends where its standalone run does (the maps of the padded
  dimensions masked to the identity), with a learned prior."""
  config = functools.partial(_CONFIG, posterior='planar', flow_steps=3,
                             prior='learned_diagonal', num_epochs=2)
  rows = sweep.run(config(workdir=str(tmp_path / 'sweep')),
                   sweep.SweepFlags(latent_dims=(1, 3), seeds=(0,), vectorize=True),
                   log=lambda *_: None)
  train.train_and_evaluate(config(workdir=str(tmp_path / 'alone'), latent_dim=3))
  alone = json.loads((tmp_path / 'alone' / 'results.json').read_text())
  for name in ('test_elbo', 'test_log_likelihood', 'test_nll_iwae'):
    np.testing.assert_allclose(rows[1][name], alone[name], rtol=5e-5)


def test_a_vectorised_iaf_sweep_is_refused_before_any_file(tmp_path, monkeypatch):
  """--vectorize is refused in one line; where vectorising is only the
  default (an accelerator's), the members train one after another."""
  workdir = tmp_path / 'sweep'
  config = _CONFIG(workdir=str(workdir), posterior='iaf', num_epochs=1,
                   flow_hidden_dims=(8,))
  with pytest.raises(config_lib.ConfigError, match='--posterior=iaf cannot pad'):
    sweep.run(config, sweep.SweepFlags(latent_dims=(1, 3), seeds=(0,),
                                       vectorize=True), log=lambda *_: None)
  assert not workdir.exists()
  monkeypatch.setattr(members_lib, 'vectorizes', lambda flags: True)
  lines = []
  rows = sweep.run(config, sweep.SweepFlags(latent_dims=(1,), seeds=(0,)),
                   log=lines.append)
  assert '--posterior=iaf cannot be padded: its members train one after another' in lines
  assert len(rows) == 1 and np.isfinite(rows[0]['test_elbo'])


def test_an_iaf_run_trains_on_the_iwae_bound_and_is_loaded_and_used(tmp_path):
  """An IAF run (the IWAE bound) loads with `load_run`; its batch helpers,
  `experiments.generate` and `experiments.embed` work on it."""
  workdir = tmp_path / 'iaf'
  config = dataclasses.replace(
      _CONFIG(workdir=str(workdir), posterior='iaf', latent_dim=3,
              flow_hidden_dims=(16,), flow_context_dim=4, num_epochs=1,
              objective='iwae', num_samples=4),
      analytic_kl=True)
  config_lib.validate(config)
  results = train.train_and_evaluate(config)
  assert np.isfinite(results['test_elbo']) and np.isfinite(results['test_nll_iwae'])
  run = vaejax.load_run(str(workdir))
  assert type(run.model.encode(np.zeros((8, 8, 1), np.float32))).__name__ == (
      'InverseAutoregressiveFlow')
  x = np.asarray(vaejax.data.load('linear_gaussian').test[:5])
  key = jax.random.key(0)
  log_p = vaejax.log_prob(run.model, x, key, num_samples=16)
  assert log_p.shape == (5,) and np.all(np.isfinite(log_p))
  flags = artifacts.GenerateFlags(num_samples=4, num_reconstructions=2,
                                  num_interpolations=1, interpolation_steps=3,
                                  traverse_dims=3, traverse_values=3)
  written = artifacts.generate(str(workdir), flags=flags, log=lambda *_: None)
  assert all(p.exists() for p in written)
  npz, png = artifacts.embed(str(workdir), log=lambda *_: None)
  arrays = np.load(npz)  # by vaejax.encode_arrays
  assert sorted(arrays) == ['base_log_var', 'base_mean', 'context', 'mean']
  assert arrays['mean'].shape == (500, 3) and png.exists()
  test_x = vaejax.data.load('linear_gaussian').test
  np.testing.assert_allclose(arrays['mean'][0], run.model.encode(test_x[0]).mean,
                             rtol=1e-5, atol=1e-6)
