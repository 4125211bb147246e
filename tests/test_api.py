"""The public API: every name in vaejax.__all__ imports and is what it says."""

import types

import vaejax


def test_every_public_name_is_the_definition_it_names():
  # Each name is re-exported as itself: a function or class of that name,
  # defined in one of vaejax's modules (not an alias of another object).
  for name in vaejax.__all__:
    value = getattr(vaejax, name)
    assert callable(value), name
    assert value.__name__ == name, (name, value.__name__)
    assert value.__module__.startswith('vaejax.'), (name, value.__module__)


def test_all_lists_exactly_the_public_names():
  public = {
      name for name, value in vars(vaejax).items()
      if not name.startswith('_') and not isinstance(value, types.ModuleType)
  }
  assert public == set(vaejax.__all__)
  assert list(vaejax.__all__) == sorted(vaejax.__all__)
