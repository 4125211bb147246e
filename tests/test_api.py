"""The public API: every name in vaejax.__all__ imports and is what it says."""

import types

import vaejax


def test_every_public_name_imports():
  for name in vaejax.__all__:
    assert getattr(vaejax, name) is not None, name


def test_all_lists_exactly_the_public_names():
  public = {
      name for name, value in vars(vaejax).items()
      if not name.startswith('_') and not isinstance(value, types.ModuleType)
  }
  assert public == set(vaejax.__all__)
  assert list(vaejax.__all__) == sorted(vaejax.__all__)
