"""Trace-time checks of the shapes that public functions promise.

They read static shapes only, so under `jax.jit` they cost nothing at run
time, and they turn a silent wrong answer (a batch summed as one example)
or a raw broadcasting error into one line saying what was passed and what
was expected.
"""

import jax.numpy as jnp


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
