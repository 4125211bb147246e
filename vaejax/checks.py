"""Trace-time checks of the shapes that public functions promise, and the
helpers of the configuration checks.

They read static shapes only, so under `jax.jit` they cost nothing at run
time, and they turn a silent wrong answer (a batch summed as one example)
or a raw broadcasting error into one line saying what was passed and what
was expected.
"""

import dataclasses
import math

import jax.numpy as jnp


def flag_field(default, help_text):
  """A dataclass field that `config.define_flags` makes a flag of, with its help."""
  return dataclasses.field(default=default, metadata={'help': help_text})


def shape_of(x):
  return '[' + ', '.join(map(str, jnp.shape(x))) + ']'


def one_example(function, vectors=(), matrices=()):
  """Checks `vectors` (name, array) are all `[D]` and `matrices` all `[D, D]`.

  Raises ValueError naming `function`, every argument's shape, and that a
  batch needs `jax.vmap`.
  """
  sizes = {jnp.shape(v)[0] for _, v in vectors if jnp.ndim(v) == 1}
  sizes |= {jnp.shape(m)[0] for _, m in matrices if jnp.ndim(m) == 2}
  good = (len(sizes) == 1
          and all(jnp.ndim(v) == 1 for _, v in vectors)
          and all(jnp.ndim(m) == 2 and jnp.shape(m)[0] == jnp.shape(m)[1]
                  for _, m in matrices))
  if not good:
    got = ', '.join(f'{name} {shape_of(a)}' for name, a in (*vectors, *matrices))
    expected = '[D] each' if not matrices else (
        f'{", ".join(n for n, _ in vectors)} [D] and '
        f'{", ".join(n for n, _ in matrices)} [D, D]')
    raise ValueError(f'{function} takes one example: got {got}; expected '
                     f'{expected} (use jax.vmap for a batch)')


# --- Configuration checks: each module checks its own fields of a
# `TrainConfig` with these (`vaejax.config.validate` calls them all). ---


class ConfigError(ValueError):
  """A bad flag value or combination; the message is one line."""


def check_choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f'--{name}={value!r} is not one of: {", ".join(choices)}')


def check_positive(c, *names):
  for name in names:
    value = getattr(c, name)
    if not (math.isfinite(value) and value > 0):
      raise ConfigError(f'--{name} must be positive, got {value}')


def check_non_negative(c, *names):
  """Finite and >= 0; None passes (a field whose unset value has a meaning)."""
  for name in names:
    value = getattr(c, name)
    if value is not None and not (math.isfinite(value) and value >= 0):
      raise ConfigError(f'--{name} must be a finite number >= 0, got {value}')


def check_widths(name, widths):
  if not widths or min(widths) < 1:
    raise ConfigError(f'--{name} must be one or more positive widths, got '
                      f'{",".join(map(str, widths)) or "nothing"}')


def refuse_ignored(c, ignored):
  """Refuses a flag set away from its default where the run would ignore it.

  `ignored`: (field name, what it applies to) pairs.
  """
  defaults = {f.name: f.default for f in dataclasses.fields(c)}
  for name, needs in ignored:
    value = getattr(c, name)
    if value != defaults[name]:
      shown = (f'--no{name}' if value is False else
               f'--{name}={",".join(map(str, value)) if isinstance(value, tuple) else value}')
      raise ConfigError(f'{shown} has no effect here: --{name} applies to '
                        f'{needs} only; drop it')
