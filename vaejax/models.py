"""The model protocol, and the factory from a config to a model.

A model is anything with two methods for ONE example (batch with `jax.vmap`),
and optionally a third:

  encode(x) -> q(z|x)              (mean, log_var), each `[L]`, for
                                   N(mean, diag(exp(log_var))); or a
                                   distribution of `vaejax.distributions`
  log_likelihood(x, z) -> scalar   log p(x|z)
  prior() -> p(z)                  a distribution; N(0, I) when absent

A model that needs randomness of its own (dropout, a stochastic layer) adds
a keyword-only `key` to either method: `encode(x, *, key)` or
`log_likelihood(x, z, *, key)`. `vaejax.elbo` then passes each call a key of
its own, derived from the key of the draws, so the model stays a pure
function (no RNG state, nothing for `jax.vmap` to trip over) and the same
key gives the same result. Nothing is subclassed: `nets.MLPVAE`, the
sweep's masked members and a user's class all just have the methods.

The factory `build_model(config, key)` looks `config.architecture` up in
`ARCHITECTURES`; `register_architecture` adds one without touching the
trainer, and the `--architecture` flag accepts it.
"""

import inspect
from typing import Protocol, runtime_checkable

from flax import nnx
import jax

from vaejax import nets


@runtime_checkable
class Model(Protocol):
  """What `vaejax.elbo`, the objectives and the trainer need of a model."""

  def encode(self, x: jax.Array):
    """q(z|x) of one example: (mean, log_var), each `[L]`, or a distribution."""

  def log_likelihood(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x|z) of one example and one `[L]` draw, a scalar."""


def takes_key(method):
  """Whether a model's method draws randomness: has a parameter named `key`."""
  return 'key' in inspect.signature(method).parameters


def _mlp(config, rngs):
  if config.top_latent_dim:
    common = _common(config)
    for name in ('posterior', 'prior', 'vamp_components'):  # checked: the defaults
      del common[name]
    return nets.TwoLayerMLPVAE(
        config.spec.image_shape, config.latent_dim,
        top_latent_dim=config.top_latent_dim,
        top_hidden_dims=tuple(config.top_hidden_dims),
        hidden_dims=tuple(config.hidden_dims), rngs=rngs, **common)
  return nets.MLPVAE(config.spec.image_shape, config.latent_dim,
                     hidden_dims=tuple(config.hidden_dims), rngs=rngs,
                     **_common(config))


def _conv(config, rngs):
  return nets.ConvVAE(config.spec.image_shape, config.latent_dim,
                      channels=tuple(config.conv_channels), rngs=rngs,
                      **_common(config))


def _common(config):
  return dict(activation=config.activation, kernel_init=config.kernel_init,
              likelihood=config.likelihood,
              gaussian_variance=config.gaussian_variance,
              posterior=config.posterior, prior=config.prior,
              vamp_components=config.vamp_components)


def _linear(config, rngs):
  common = _common(config)
  del common['activation']
  return nets.LinearVAE(config.spec.image_shape, config.latent_dim, rngs=rngs,
                        **common)


# --architecture -> factory(config, rngs) returning an nnx.Module model.
ARCHITECTURES = {'mlp': _mlp, 'conv': _conv, 'linear': _linear}


def register_architecture(name, factory):
  """Adds `factory(config, rngs) -> model` as `--architecture=name`.

  The model must be an `nnx.Module` that implements `Model`; its
  `nnx.Param`s are what the trainer optimises and checkpoints.
  """
  if name in ARCHITECTURES:
    raise ValueError(f'architecture {name!r} is already registered')
  ARCHITECTURES[name] = factory


def build_model(config, key):
  """The model of `config.architecture`, its parameters initialised from `key`."""
  return ARCHITECTURES[config.architecture](config, nnx.Rngs(params=key))


def graphdef_of(config):
  """The `nnx.GraphDef` of `config`'s model (split on `nnx.Param`).

  Traced abstractly (`nnx.eval_shape`): no parameter is initialised, which
  for the usual sizes takes seconds where this takes milliseconds.
  """
  abstract = nnx.eval_shape(lambda: build_model(config, jax.random.key(0)))
  return nnx.split(abstract, nnx.Param)[0]
