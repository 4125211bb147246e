"""Using a trained model: batch helpers for any model of the protocol.

Each takes a model (`vaejax.models`; e.g. `vaejax.load_run(workdir).model`)
and a batch, is compiled with `jax.jit` (the model an argument where it is a
pytree, as `nnx.Module`s are; run op by op otherwise), and maps over the
batch in chunks of at most `chunk_size` examples, so that a large array
does not need the memory of all of it at once. Example i's draws come from
`fold_in(key, i)`, so a result does not depend on the chunking.

  encode(model, x)                     q(z|x) of each example, batched
  decode(model, z)                     E[x|z]: pixel probabilities, Gaussian means
  reconstruct(model, x, key)           E[x|z] at one z ~ q(z|x) per example
  sample(model, key, num)              ancestral draws from the model's prior
  interpolate(model, x_a, x_b, steps)  decoded path between posterior means
  traverse(model, x, dim, values)      decoded posterior means, one dim varied
  log_prob(model, x, key, K)           the importance-weighted log p(x) estimate
"""

import dataclasses
import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaejax import bounds
from vaejax import distributions
from vaejax import evaluation
from vaejax import models

CHUNK_SIZE = 1024
# The helpers' arguments that are Python values: shapes, sizes, switches.
_STATIC = ('chunk_size', 'num', 'num_samples', 'num_steps', 'spherical', 'dim',
           'latent_dim')
_DEFAULT_KEY = 0  # the key of an encoder or decoder of its own randomness


def _compiled(fn):
  """`fn(model, *args, **static)` jitted over the model where it is a pytree."""
  names = inspect.signature(fn).parameters
  jitted = jax.jit(fn, static_argnames=[n for n in _STATIC if n in names])

  @functools.wraps(fn)
  def call(model, *args, **kwargs):
    leaves = jax.tree.leaves(model)
    if len(leaves) == 1 and leaves[0] is model:  # not a pytree
      return fn(model, *args, **kwargs)
    return jitted(model, *args, **kwargs)

  return call


def _map(fn, n, chunk_size):
  """`fn(indices)` over range(n) in chunks (`evaluation.map_over_examples`)."""
  return evaluation.map_over_examples(fn, n, max(1, min(chunk_size, n)))


def _check_batch(name, x):
  if jnp.ndim(x) < 1 or jnp.shape(x)[0] < 1:
    raise ValueError(f'{name} takes a batch [N, ...] of one or more; got '
                     f'{jnp.shape(x)}')


def _mean_image(model, call):
  if model.mean_image is None:
    raise TypeError(f'{call} needs the model\'s mean_image(z), E[x|z], which '
                    'it does not have (vaejax.models)')
  return model.mean_image


@_compiled
def encode(model, x, key=None, *, chunk_size=CHUNK_SIZE):
  """q(z_1|x) of each example of `x` `[N, ...]`, as one batched distribution.

  For the diagonal Gaussian its `mean` and `log_var` are `[N, L]`; `key`
  is for an encoder of its own randomness (default `key(0)`).
  """
  _check_batch('encode', x)
  model = models.adapt(model)
  key = jax.random.key(_DEFAULT_KEY) if key is None else key
  return _map(lambda i: jax.vmap(model.encode)(
      x[i], jax.vmap(functools.partial(jax.random.fold_in, key))(i)),
              x.shape[0], chunk_size)


@_compiled
def encode_arrays(model, x, key=None, *, chunk_size=CHUNK_SIZE):
  """Each example's posterior as a dict of `[N, ...]` arrays: q's own array
  fields (a diagonal Gaussian's `mean` and `log_var`, a full covariance's
  `scale_tril`, a flow's base and context) and `mean`, where q has one.

  Reduced example by example, so that parts shared by every example (a
  flow's networks) are never repeated N times, as `encode`'s batched
  distribution repeats them.
  """
  _check_batch('encode_arrays', x)
  model = models.adapt(model)
  key = jax.random.key(_DEFAULT_KEY) if key is None else key

  def arrays(x, key):
    q = model.encode(x, key)
    fields = _array_fields(q)
    mean = getattr(q, 'mean', None)
    return fields if mean is None else {**fields, 'mean': mean}

  return _map(lambda i: jax.vmap(arrays)(
      x[i], jax.vmap(functools.partial(jax.random.fold_in, key))(i)),
              x.shape[0], chunk_size)


def _array_fields(q, prefix=''):
  """The arrays of a dataclass distribution's fields, by name; a field that
  is a distribution itself (a flow's base) as `base_mean`, `base_log_var`."""
  if not dataclasses.is_dataclass(q):
    return {}
  fields = {}
  for field in dataclasses.fields(q):
    value = getattr(q, field.name)
    if isinstance(value, jax.Array):
      fields[prefix + field.name] = value
    elif dataclasses.is_dataclass(value):
      fields.update(_array_fields(value, f'{prefix}{field.name}_'))
  return fields


def _means(model, x, chunk_size, call):
  """`[N, L]` the posterior means of `x`, example by example."""
  arrays = encode_arrays(model, x, chunk_size=chunk_size)
  if 'mean' not in arrays:
    raise TypeError(f'{call} needs the posterior\'s mean, and the model\'s '
                    'posterior has none')
  return arrays['mean']


@_compiled
def decode(model, z, *, chunk_size=CHUNK_SIZE):
  """E[x|z] for each row of `z` `[N, L]` (`model.mean_image`)."""
  if jnp.ndim(z) != 2 or jnp.shape(z)[0] < 1:
    raise ValueError(f'decode takes latents [N, L]; got {jnp.shape(z)}')
  mean_image = _mean_image(models.adapt(model), 'decode')
  return _map(lambda i: jax.vmap(mean_image)(z[i]), z.shape[0], chunk_size)


@_compiled
def reconstruct(model, x, key, *, chunk_size=CHUNK_SIZE):
  """E[x|z] at one draw z ~ q(z|x) per example of `x` `[N, ...]`."""
  _check_batch('reconstruct', x)
  model = models.adapt(model)
  mean_image = _mean_image(model, 'reconstruct')

  def one(x, k):
    return mean_image(model.posterior(x, k).sample_and_log_prob(k)[0])

  return _map(lambda i: jax.vmap(one)(
      x[i], jax.vmap(functools.partial(jax.random.fold_in, key))(i)),
              x.shape[0], chunk_size)


class Samples(NamedTuple):
  """Draws from a model: z_1 `[num, L]` and E[x|z_1] `[num, ...]` (None for
  a model without `mean_image`)."""
  latents: jax.Array
  images: jax.Array


@_compiled
def sample(model, key, num, latent_dim=None, *, chunk_size=CHUNK_SIZE):
  """`num` ancestral draws from the model's own prior, decoded.

  z_L ~ p(z_L), then z_l ~ p(z_l|z_{l+1}) down to z_1, the model's prior
  (a VampPrior's mixture, a learned one) or N(0, I) where it has none, of
  `latent_dim` dimensions (needed only then).
  """
  adapted = models.adapt(model)
  p = adapted.prior()
  if latent_dim is None and isinstance(p, distributions.KNOWN):
    latent_dim = p.dim
  if p is None and latent_dim is None:
    raise ValueError('sample: the model has no prior(), so N(0, I) is drawn; '
                     'give latent_dim, its size')
  z = adapted.prior_draws(key, num, latent_dim)
  images = (None if adapted.mean_image is None
            else decode(model, z, chunk_size=chunk_size))  # the draws at once
  return Samples(z, images)


def _slerp(a, b, t):
  """Spherical interpolation between rows of a and b `[L]` at t `[T]`."""
  cos = jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  small = omega < 1e-6
  safe = jnp.where(small, 1.0, omega)
  wa = jnp.where(small, 1 - t, jnp.sin((1 - t) * safe) / jnp.sin(safe))
  wb = jnp.where(small, t, jnp.sin(t * safe) / jnp.sin(safe))
  return wa[:, None] * a[None] + wb[:, None] * b[None]


@_compiled
def interpolate(model, x_a, x_b, num_steps, *, spherical=False,
                chunk_size=CHUNK_SIZE):
  """Decoded points between the posterior means of x_a and x_b, `[N, ...]` each.

  Returns `[N, num_steps, ...]`: step t of row n decodes (1 - t) z_a + t z_b
  (or the great-circle path, `spherical=True`) for t = 0 .. 1 and z the
  posterior means of `x_a[n]` and `x_b[n]`.
  """
  _check_batch('interpolate', x_a)
  if jnp.shape(x_a) != jnp.shape(x_b):
    raise ValueError(f'interpolate: x_a {jnp.shape(x_a)} and x_b '
                     f'{jnp.shape(x_b)} must have one shape')
  z_a = _means(model, x_a, chunk_size, 'interpolate')
  z_b = _means(model, x_b, chunk_size, 'interpolate')
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=z_a.dtype)
  path = (jax.vmap(functools.partial(_slerp, t=t))(z_a, z_b) if spherical
          else z_a[:, None] + t[None, :, None] * (z_b - z_a)[:, None])
  images = decode(model, path.reshape(-1, path.shape[-1]), chunk_size=chunk_size)
  return images.reshape(*path.shape[:2], *images.shape[1:])


@_compiled
def traverse(model, x, dim, values, *, chunk_size=CHUNK_SIZE):
  """Decoded posterior means of `x` `[N, ...]` with dimension `dim` set to each
  of `values` `[V]`: `[N, V, ...]`."""
  _check_batch('traverse', x)
  z = _means(model, x, chunk_size, 'traverse')
  if not 0 <= dim < z.shape[-1]:
    raise ValueError(f'traverse: dim {dim} is not a dimension of z, which has '
                     f'{z.shape[-1]}')
  values = jnp.asarray(values, z.dtype)
  if values.ndim != 1:
    raise ValueError(f'traverse takes values [V]; got {values.shape}')
  path = jnp.broadcast_to(z[:, None], (z.shape[0], values.shape[0], z.shape[1]))
  path = path.at[:, :, dim].set(values[None, :])
  images = decode(model, path.reshape(-1, z.shape[-1]), chunk_size=chunk_size)
  return images.reshape(*path.shape[:2], *images.shape[1:])


@_compiled
def log_prob(model, x, key, num_samples, *, chunk_size=CHUNK_SIZE):
  """The importance-weighted estimate of log p(x) per example, `[N]` nats.

  `bounds.iwae_bound` with K = `num_samples` (a lower bound, tight as K
  grows), example i's draws from `fold_in(key, i)`; at most `chunk_size`
  draws are weighed at once.
  """
  _check_batch('log_prob', x)
  per_chunk = min(num_samples, chunk_size)

  def one(x, k):
    return bounds.iwae_bound(model, x, k, num_samples, chunk_size=per_chunk)

  return _map(lambda i: jax.vmap(one)(
      x[i], jax.vmap(functools.partial(jax.random.fold_in, key))(i)),
              x.shape[0], max(1, chunk_size // per_chunk))
