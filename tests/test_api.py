"""The public API: every name in vaejax.__all__ imports and is what it says."""

import dataclasses
import functools
import importlib
import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax


def test_every_public_name_is_the_definition_it_names():
  # Each name is re-exported as itself: a function or class of that name,
  # defined in one of vaejax's modules (not an alias of another object).
  for name in vaejax.__all__:
    value = getattr(vaejax, name)
    assert callable(value) and not isinstance(value, types.ModuleType), name
    assert value.__name__ == name, (name, value.__name__)
    assert value.__module__.startswith('vaejax.'), (name, value.__module__)


def test_vaejax_elbo_is_the_function_and_bounds_its_module():
  assert inspect.isfunction(vaejax.elbo)
  assert list(inspect.signature(vaejax.elbo).parameters)[:3] == ['model', 'x', 'key']
  assert vaejax.bounds.elbo is vaejax.elbo
  assert vaejax.bounds.iwae_bound is vaejax.iwae_bound
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module('vaejax.elbo')
  model = vaejax.make_linear_gaussian(jax.random.key(0), 6, 2)
  x, key = model.sample(jax.random.key(1), 1)[0], jax.random.key(2)
  called = vaejax.elbo(model, x, key, num_samples=3)
  assert isinstance(called, vaejax.ElboTerms)
  # It composes: partial, vmap, jit with static names.
  jitted = jax.jit(vaejax.elbo, static_argnames='num_samples')
  np.testing.assert_allclose(jitted(model, x, key, num_samples=3).elbo,
                             called.elbo, rtol=1e-6)
  batch = model.sample(jax.random.key(3), 4)
  terms = jax.vmap(functools.partial(vaejax.elbo, model))(
      batch, jax.random.split(key, 4))
  assert terms.elbo.shape == (4,)


def test_all_lists_exactly_the_public_names():
  public = {
      name for name, value in vars(vaejax).items()
      if not name.startswith('_')
      and (callable(value) or not isinstance(value, types.ModuleType))
  }
  assert public == set(vaejax.__all__)
  assert list(vaejax.__all__) == sorted(vaejax.__all__)


@pytest.mark.jax_defaults
def test_marked_tests_run_at_jax_defaults():
  assert jax.config.jax_default_matmul_precision is None
  assert jax.config.jax_numpy_rank_promotion == 'allow'
  jnp.zeros(3) + jnp.zeros((2, 1))  # implicit rank promotion, as users may


def test_the_rest_of_the_suite_runs_strict():
  assert jax.config.jax_default_matmul_precision == 'highest'
  with pytest.raises(ValueError, match='rank_promotion'):
    jnp.zeros(3) + jnp.zeros((2, 1))


def test_the_flags_help_names_every_choice_the_checks_accept():
  # config.py holds the help texts without importing the networks; the
  # names it lists are those of the modules that check them.
  from vaejax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vaejax import nets  # pylint: disable=g-import-not-at-top
  from vaejax import optim  # pylint: disable=g-import-not-at-top
  helps = {f.name: f.metadata['help']
           for f in dataclasses.fields(config_lib.TrainConfig)}
  for name in nets.ACTIVATIONS:
    assert name in helps['activation'], name
  for name in nets.INITS:
    assert name in helps['kernel_init'], name
  assert f'but {optim.ADAMW_WEIGHT_DECAY:.0e}'.replace('e-0', 'e-') in helps['weight_decay']
  for name in optim.LR_SCHEDULES:
    assert name in helps['lr_schedule'], name
  for name in optim.ADAM_VARIANTS:
    assert name in helps['adam_variant'], name


def test_config_checks_live_with_the_modules_they_check():
  import pathlib  # pylint: disable=g-import-not-at-top
  text = (pathlib.Path(vaejax.__file__).parent / 'config.py').read_text()
  header = text[:text.index('class TrainConfig')]
  for module in ('architectures', 'models', 'nets', 'heads', 'objectives', 'optim'):
    assert f'from vaejax import {module}\n' not in header, module
