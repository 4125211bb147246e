"""From a config to a model: the `--architecture` registry and the model's checks.

`build_model(config, key)` looks `config.architecture` up in `ARCHITECTURES`,
factories `(config, rngs) -> model` (an `nnx.Module` of the protocol of
`vaejax.models`, whose `nnx.Param`s the trainer optimises and checkpoints);
`register_architecture` adds one without touching the trainer, and the
`--architecture` flag accepts it. `check_config` checks a config's model
fields, for `vaejax.config.validate`. `vaejax.models` exports these names too.
"""

import math

from flax import nnx
import jax

from vaejax import checks
from vaejax import heads
from vaejax import nets


def _mlp(config, rngs):
  if config.top_latent_dim:
    common = _common(config)
    for name in ('posterior', 'prior', 'vamp_components', 'flow'):  # checked: the defaults
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
              vamp_components=config.vamp_components,
              flow=heads.FlowOptions(config.flow_steps,
                                     tuple(config.flow_hidden_dims),
                                     config.flow_context_dim))


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
  return nnx.split(abstract_model(config), nnx.Param)[0]


def abstract_model(config):
  """`config`'s model with shapes for arrays (`nnx.eval_shape`): its
  structure and heads, with no parameter initialised."""
  return nnx.eval_shape(lambda: build_model(config, jax.random.key(0)))


# The networks vaejax builds; `--output_bias=data_mean` sets their output layer.
BUILT_IN_ARCHITECTURES = ('mlp', 'conv', 'linear')
OUTPUT_BIASES = ('zero', 'data_mean')
# The likelihoods that --gaussian_variance applies to.
GAUSSIAN_LIKELIHOODS = ('gaussian', 'gaussian_sigmoid')


def check_config(c, spec):
  """The model's fields of a `TrainConfig` `c` for data of `spec`; raises
  `checks.ConfigError` in one line."""
  checks.check_choice('architecture', c.architecture, tuple(ARCHITECTURES))
  checks.check_choice('activation', c.activation, nets.ACTIVATIONS)
  checks.check_choice('kernel_init', c.kernel_init, nets.INITS)
  checks.check_choice('output_bias', c.output_bias, OUTPUT_BIASES)
  if c.output_bias == 'data_mean' and c.architecture not in BUILT_IN_ARCHITECTURES:
    raise checks.ConfigError(
        f'--output_bias=data_mean sets the output layer of vaejax\'s networks '
        f'({", ".join(BUILT_IN_ARCHITECTURES)}), not of '
        f'--architecture={c.architecture}')
  checks.check_choice('likelihood', c.likelihood, tuple(heads.OBSERVATION_HEADS))
  checks.check_choice('posterior', c.posterior, tuple(heads.POSTERIOR_HEADS))
  checks.check_choice('prior', c.prior, tuple(heads.PRIOR_HEADS))
  checks.check_positive(c, 'vamp_components', 'latent_dim', 'flow_steps')
  checks.check_non_negative(c, 'flow_context_dim')
  if c.prior == 'vamp' and c.posterior in nets.NON_DIAGONAL_POSTERIORS:
    raise checks.ConfigError(f'--prior=vamp is a mixture of diagonal posteriors: '
                             f'it needs --posterior=diagonal, not {c.posterior}')
  if c.posterior == 'iaf':
    checks.check_widths('flow_hidden_dims', c.flow_hidden_dims)
  ignored = [('gaussian_variance', '--likelihood=gaussian and gaussian_sigmoid')] * (
      c.likelihood not in GAUSSIAN_LIKELIHOODS)
  ignored += [('vamp_components', '--prior=vamp')] * (c.prior != 'vamp')
  ignored += [('flow_steps', '--posterior=planar and iaf')] * (
      c.posterior not in nets.FLOW_POSTERIORS)
  ignored += [(name, '--posterior=iaf') for name in (
      'flow_hidden_dims', 'flow_context_dim')] * (c.posterior != 'iaf')
  ignored += [('top_hidden_dims', '--top_latent_dim above 0 (two layers)')] * (
      not c.top_latent_dim)
  ignored += {'mlp': [('conv_channels', '--architecture=conv')],
              'conv': [('hidden_dims', '--architecture=mlp')],
              'linear': [(n, '--architecture=mlp or conv') for n in (
                  'hidden_dims', 'conv_channels', 'activation')]}.get(
                      c.architecture, [])
  checks.refuse_ignored(c, ignored)
  _check_top_layer(c)
  if c.architecture == 'mlp':
    checks.check_widths('hidden_dims', c.hidden_dims)
  elif c.architecture == 'conv':
    if len(c.conv_channels) != 2 or min(c.conv_channels) < 1:
      raise checks.ConfigError('--conv_channels must be two positive channel counts')
    height, width, _ = spec.image_shape
    if height % 4 or width % 4:
      raise checks.ConfigError(f'--architecture=conv needs image sides divisible '
                               f'by 4; {spec.name} has {height}x{width}')
  if c.likelihood in GAUSSIAN_LIKELIHOODS and c.gaussian_variance != 'learned':
    try:
      variance = float(c.gaussian_variance)
    except ValueError:
      variance = -1.0
    if not (math.isfinite(variance) and variance > 0):
      raise checks.ConfigError(f'--gaussian_variance must be "learned" or a '
                               f'positive number, got {c.gaussian_variance!r}')


def _check_top_layer(c):
  if c.top_latent_dim == 0:
    return
  if not (c.top_latent_dim > 0 and math.isfinite(c.top_latent_dim)):
    raise checks.ConfigError(f'--top_latent_dim must be 0 (one layer) or '
                             f'positive, got {c.top_latent_dim}')
  checks.check_widths('top_hidden_dims', c.top_hidden_dims)
  for name, needs in (('architecture', 'mlp'), ('posterior', 'diagonal'),
                      ('prior', 'standard_normal')):
    if getattr(c, name) != needs:
      raise checks.ConfigError(f'--top_latent_dim (two stochastic layers) needs '
                               f'--{name}={needs}, got --{name}={getattr(c, name)}')
