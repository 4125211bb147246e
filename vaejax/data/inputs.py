"""Stored examples -> model inputs."""

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import rng

def to_inputs(x, key, *, pixels, dynamic_binarization):
  """Stored examples -> float32 model inputs.

  Binary pixels become 0./1.; grey levels become x / 255, or, with dynamic
  binarization, a Bernoulli(x / 255) draw from `key`; real values pass.
  """
  x = x.astype(jnp.float32)
  if pixels != 'grey':
    return x
  x = x / 255.0
  if dynamic_binarization:
    return jax.random.bernoulli(key, x).astype(jnp.float32)
  return x


def input_mean(x, *, pixels):
  """`[H, W, C]` float32 mean of the model inputs of examples `x`.

  Grey levels count as x / 255, also under dynamic binarization (the mean of
  its Bernoulli(x / 255) draws).
  """
  mean = np.mean(x, axis=0, dtype=np.float64)
  return (mean / 255.0 if pixels == 'grey' else mean).astype(np.float32)


def eval_inputs(x, *, pixels, dynamic_binarization, split_index):
  """An evaluation split as float32 model inputs on the device.

  Grey levels under dynamic binarization are binarized once, with the fixed
  key of the split (`rng.eval_binarize_key`), the same for every run.
  """
  return jax.jit(to_inputs, static_argnames=('pixels', 'dynamic_binarization'))(
      jnp.asarray(x), rng.eval_binarize_key(split_index), pixels=pixels,
      dynamic_binarization=dynamic_binarization)
