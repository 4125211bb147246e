"""The model protocol, its one adapter, and the factory from a config to a model.

This is the one place that says what vaejax asks of a model and of the
distributions it returns; the ELBO, the bounds, the trainer, the evaluation
and the sweep all go through `adapt` and inspect nothing themselves.

A model is anything with these methods, each for ONE example (batch with
`jax.vmap`); only the first two are required:

  encode(x) -> q(z|x)                 a posterior (below), or (mean, log_var),
                                      each `[L]`, for N(mean, diag(exp(log_var)))
  log_likelihood(x, z) -> scalar      log p(x|z)
  prior() -> p(z)                     a prior (below); N(0, I) when absent
  mean_image(z) -> E[x|z]             for the trainer's images; none when absent

and, for `latent_layers = L` stochastic layers (an int, 2 or more; latents
z_1 next to x .. z_L at the top, `l` a Python int):

  encode_layer(l, z) -> q(z_l|z_{l-1})   l = 2..L, z = z_{l-1}
  prior_layer(l, z) -> p(z_l|z_{l+1})    l = 1..L-1, z = z_{l+1}

where `encode` gives q(z_1|x), `prior()` p(z_L) and `log_likelihood` reads
z_1. A method that needs randomness of its own (dropout, a stochastic layer)
takes a keyword-only `key`: `encode(x, *, key)`, `log_likelihood(x, z, *,
key)`, `encode_layer(l, z, *, key)`, `prior_layer(l, z, *, key)`. The
library passes each call a key of its own, derived from the key of the
draws, so the model stays a pure function (no RNG state, nothing for
`jax.vmap` to trip over) and the same key gives the same result. Nothing is
subclassed: `nets.VAE`, the sweep's masked members and a user's class all
just have the methods.

A posterior q, returned by `encode`, `encode_layer` or `prior_layer`, is a
pytree (it passes through `jax.jit`, `jax.vmap` and `jax.lax.stop_gradient`,
which stops its parameters) with

  sample_and_log_prob(key, num_samples=None) -> (z, log q(z))
      z `[L]` and a scalar, or `[K, L]` and `[K]` for K draws,
      differentiable in the parameters (reparameterised)

and, where it has them, `log_prob(z)` and `mean` (active units and the
reconstructions read `mean`). A prior, returned by `prior()`, needs only
`log_prob(z)` when the KL is estimated (`analytic_kl=False`), and
`sample(key, num_samples)` for the trainer's sample images. The KL is in
closed form for the pairs `vaejax.distributions.kl_divergence` knows,
decided from the types. The distributions of `vaejax.distributions` are all
of these; the Gaussians evaluate log q(z) from their reparameterisation
noise, which stays exact where q is narrow next to its mean.

The factory `build_model(config, key)` (`vaejax.architectures`, its names
also here) looks `config.architecture` up in `ARCHITECTURES`;
`register_architecture` adds one without touching the trainer, and the
`--architecture` flag accepts it.
"""

import inspect
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import distributions
from vaejax import heads
# pylint: disable=unused-import  (the factory's public names, as ever here)
from vaejax.architectures import ARCHITECTURES
from vaejax.architectures import abstract_model
from vaejax.architectures import build_model
from vaejax.architectures import check_config
from vaejax.architectures import graphdef_of
from vaejax.architectures import register_architecture
# pylint: enable=unused-import

# fold_in tag of the key given to an encoder of its own randomness; far from
# the small indices (examples, sample chunks) folded into the same keys.
ENCODE_TAG = 2**31 - 1


@runtime_checkable
class Model(Protocol):
  """What the library needs of a model: the two required methods.

  The optional ones (`prior`, `mean_image`, `latent_layers` with
  `encode_layer` and `prior_layer`) and the key convention are in this
  module's docstring.
  """

  def encode(self, x: jax.Array):
    """q(z|x) of one example: (mean, log_var), each `[L]`, or a posterior."""

  def log_likelihood(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x|z) of one example and one `[L]` draw, a scalar."""


def takes_key(method):
  """Whether a model's method draws randomness: has a parameter named `key`."""
  return 'key' in inspect.signature(method).parameters


def _keyed(method):
  """`call(*args, key)`: `method(*args, key=key)` if it takes a key, else
  `method(*args)`."""
  if takes_key(method):
    return lambda *args, key: method(*args, key=key)
  return lambda *args, key: method(*args)


class Adapted:
  """A model in the library's internal form: every method gets a key, every
  posterior and prior is a checked distribution, the optional parts are
  filled in. Made once by `adapt`, where a model enters the library.

  Attributes:
    model: the user's model.
    layers: its number of stochastic layers, L.
    has_prior: whether it has `prior()` (else N(0, I)).
    mean_image: `mean_image(z)` or None.
  """

  def __init__(self, model):
    for name in ('encode', 'log_likelihood'):
      if not callable(getattr(model, name, None)):
        raise TypeError(f'the model ({type(model).__name__}) has no {name}; a '
                        'model needs encode(x) and log_likelihood(x, z) '
                        '(vaejax.models)')
    self.model = model
    self.layers = _latent_layers(model)
    self._encode = _keyed(model.encode)
    self._log_likelihood = _keyed(model.log_likelihood)
    if self.layers > 1:
      self._encode_layer = _keyed(model.encode_layer)
      self._prior_layer = _keyed(model.prior_layer)
    self._prior = getattr(model, 'prior', None)
    self.has_prior = self._prior is not None
    self.mean_image = getattr(model, 'mean_image', None)
    self._posterior_head = getattr(model, 'posterior_head', None)
    self._prior_head = getattr(model, 'prior_head', None)

  def stopped(self):
    """The user's model with its parameters stopped (`jax.lax.stop_gradient`);
    one line where the model is not a pytree."""
    leaves = jax.tree.leaves(self.model)
    if len(leaves) == 1 and leaves[0] is self.model:
      raise TypeError(f'the model ({type(self.model).__name__}) is not a pytree, '
                      'so its parameters cannot be stopped; make it one (an '
                      'nnx.Module, a NamedTuple or a registered dataclass)')
    return jax.lax.stop_gradient(self.model)

  @property
  def posterior_blocks(self):
    """The layout of the encoder's raw output (`vaejax.heads`), or None for
    a model without a posterior head."""
    return None if self._posterior_head is None else self._posterior_head.blocks

  def masked_posterior(self, q, on):
    """q with the dimensions where `on` is False N(0, 1): by the model's
    posterior head, else for the library's Gaussians."""
    if self._posterior_head is None:
      return heads.mask_posterior(q, on)
    return self._posterior_head.masked(q, on)

  def masked_prior(self, p, on):
    """The prior `p` with the dimensions where `on` is False N(0, 1)."""
    if self._prior_head is None:
      return heads.mask_prior(p, on)
    return self._prior_head.masked(p, on)

  def posterior(self, x, key):
    """q(z_1|x) for draws from `key`: an encoder of its own randomness gets
    `fold_in(key, ENCODE_TAG)`."""
    return self.encode(x, jax.random.fold_in(key, ENCODE_TAG))

  def encode(self, x, key):
    """q(z_1|x), an encoder of its own randomness given `key` as it is."""
    return one_example(self._encode(x, key=key), 'model.encode(x)',
                       f'x {checks.shape_of(x)}')

  def posterior_layer(self, layer, z, key):
    """q(z_layer|z_{layer-1}), layer = 2..L; `key` for its own randomness."""
    return one_example(self._encode_layer(layer, z, key=key),
                       f'model.encode_layer({layer}, z)', f'z {checks.shape_of(z)}')

  def prior_layer(self, layer, z, key, dim):
    """p(z_layer|z_{layer+1}) over `dim` dimensions, layer = 1..L-1."""
    call = f'model.prior_layer({layer}, z)'
    p = one_example(self._prior_layer(layer, z, key=key), call,
                    f'z {checks.shape_of(z)}')
    _check_dim(p, dim, call, f'q(z_{layer})')
    return p

  def prior(self):
    """`model.prior()`, or None for N(0, I) (`prior_of`)."""
    return None if self._prior is None else self._prior()

  @staticmethod
  def prior_of(p, z):
    """The top prior for draws `z` `[..., L]`: `p`, or N(0, I) of z's size."""
    if p is None:
      return distributions.StandardNormal(jnp.shape(z)[-1], jnp.result_type(z))
    _check_dim(p, jnp.shape(z)[-1], 'model.prior()', 'the top posterior')
    return p

  def prior_draws(self, key, num, latent_dim):
    """`[num, latent_dim]` draws of z_1 from the model's prior, ancestral
    through every stochastic layer: z_L ~ p(z_L), then z_l ~ p(z_l|z_{l+1}).

    N(0, I) of one layer draws `jax.random.normal(key, (num, latent_dim))`, as
    vaejax always has for its sample images; a `prior_layer` of its own
    randomness gets a key per draw.
    """
    p = self.prior()
    if p is not None and not callable(getattr(p, 'sample', None)):
      raise TypeError(f'model.prior() returned a {type(p).__name__} without '
                      'sample(key, num_samples); drawing from the model (the '
                      "trainer's sample images) needs it (vaejax.models)")
    if self.layers == 1:
      if p is None or isinstance(p, distributions.StandardNormal):
        return jax.random.normal(key, (num, latent_dim))
      return p.sample(key, num)
    if p is None:
      raise ValueError('drawing from a model of several stochastic layers needs '
                       'its prior(): the top layer\'s size is known only from it')
    keys = jax.random.split(key, self.layers)
    z = p.sample(keys[-1], num)
    for layer in range(self.layers - 1, 0, -1):
      def draw(z, k, layer=layer):
        return self.prior_layer(layer, z, jax.random.fold_in(k, ENCODE_TAG),
                                None).sample(k)
      z = jax.vmap(draw)(z, jax.random.split(keys[layer - 1], num))
    return z

  def log_likelihood(self, x, z, key):
    """log p(x|z_1), a scalar, checked; `key` for its own randomness."""
    value = self._log_likelihood(x, z, key=key)
    if jnp.shape(value) != ():
      raise ValueError(
          f'model.log_likelihood(x, z) returned {checks.shape_of(value)} for x '
          f'{checks.shape_of(x)}; expected a scalar, log p(x|z) summed over '
          "the example's dimensions")
    return value


def adapt(model):
  """`model` in the library's internal form (`Adapted`); an `Adapted` as is."""
  return model if isinstance(model, Adapted) else Adapted(model)


def _latent_layers(model):
  """The number of stochastic layers: `model.latent_layers`, else 1."""
  layers = getattr(model, 'latent_layers', 1)
  if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
    raise ValueError(f'model.latent_layers is {layers!r}; expected an int, 1 '
                     'or more')
  missing = [name for name in ('encode_layer', 'prior_layer')
             if layers > 1 and not hasattr(model, name)]
  if missing:
    raise ValueError(f'model.latent_layers is {layers} but the model has no '
                     f'{" or ".join(missing)}; a model of several stochastic '
                     'layers needs both (see vaejax.models)')
  return layers


def _check_dim(p, dim, call, other):
  """A prior of the library's, which knows its size, is over `dim` dimensions."""
  if dim is not None and isinstance(p, distributions.KNOWN) and p.dim != dim:
    raise ValueError(f'{call} is over {p.dim} dimensions and {other} '
                     f'over {dim}; they must agree')


def one_example(output, call, given):
  """`output` of a model's method as a checked distribution over one `[L]`.

  A `(mean, log_var)` pair is a `DiagonalGaussian`. One-line errors: an
  object without `sample_and_log_prob`, or not a pytree, names what is
  missing; a Gaussian whose parts are not one example's names their shapes.
  """
  if isinstance(output, tuple) and not hasattr(output, 'sample_and_log_prob'):
    if len(output) != 2:
      raise TypeError(f'{call} returned a tuple of {len(output)}; expected '
                      '(mean, log_var) or a distribution (vaejax.models)')
    output = distributions.DiagonalGaussian(*output)
  if not callable(getattr(output, 'sample_and_log_prob', None)):
    raise TypeError(
        f'{call} returned a {type(output).__name__} without sample_and_log_prob'
        '(key, num_samples); a posterior needs it (vaejax.models)')
  leaves = jax.tree.leaves(output)
  if len(leaves) == 1 and leaves[0] is output:
    raise TypeError(f'{call} returned a {type(output).__name__}, which is not a '
                    'pytree; register it (e.g. a flax.struct dataclass or a '
                    'NamedTuple, vaejax.models)')
  if isinstance(output, distributions.DiagonalGaussian):
    parts, expected = (('mean', output.mean, 1), ('log_var', output.log_var, 1)), '[L] each'
  elif isinstance(output, distributions.FullCovarianceGaussian):
    parts = (('mean', output.mean, 1), ('scale_tril', output.scale_tril, 2))
    expected = '[L] and [L, L]'
  else:
    return output
  if (any(jnp.ndim(a) != rank for _, a, rank in parts)
      or len({d for _, a, _ in parts for d in jnp.shape(a)}) != 1):
    got = ' and '.join(f'{name} {checks.shape_of(a)}' for name, a, _ in parts)
    raise ValueError(
        f'{call} returned {got} for {given}; expected {expected} for ONE '
        'example (vmap over a batch, or use negative_elbo)')
  return output
