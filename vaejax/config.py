"""The training configuration: one dataclass, its absl flags, and its checks.

Every field of `TrainConfig` is a flag of `experiments.train` (and of the
sweep), with the field's default and help text, so flags, config.json and the
library never disagree. `validate` checks everything that can be checked
before any data is loaded or anything compiled, and raises `ConfigError` with
a one-line message.
"""

import dataclasses
import json
import math
import pathlib
import typing

from absl import flags
from absl import logging

from vaejax import data
from vaejax import heads
from vaejax import models
from vaejax import nets
from vaejax import objectives
from vaejax import optim


class ConfigError(ValueError):
  """A bad flag value or combination; the message is one line."""


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a training run."""
  workdir: str = _field(
      '', 'Directory for checkpoints, metrics, results and images. Running '
      'the same command again resumes the run.')
  dataset: str = _field(
      'binarized_mnist', f'One of: {", ".join(sorted(data.DATASETS))}; or a '
      'NumPy .npz file of your own with arrays train, valid and test, each '
      '[N, H, W] or [N, H, W, C].')
  tfds_data_dir: str | None = _field(
      None, 'Where TFDS keeps prepared datasets (default: TFDS\'s own, '
      '$TFDS_DATA_DIR or ~/tensorflow_datasets).')
  tfds_manual_dir: str | None = _field(
      None, 'A root with one folder per dataset, ROOT/<dataset>/, holding the '
      'files the TFDS builder downloads; used to prepare a dataset offline. '
      f'Default: ${data.MANUAL_DIR_ENV}.')
  num_validation: int | None = _field(
      None, 'mnist and fashion_mnist: how many of the last training images are '
      'held out as the validation set (unset: 10,000; Burda et al.\'s code '
      'holds out 400). Other datasets have a validation split of their own.')
  dynamic_binarization: bool = _field(
      False, 'Grey-level datasets only: draw every pixel from Bernoulli(x / 255) '
      'afresh each step (Burda et al. 2015); evaluation sets are binarized once '
      'with a fixed key.')
  architecture: str = _field(
      'mlp', 'mlp, conv, linear (a linear encoder and decoder: the model '
      'class of the generated linear_gaussian datasets), or a name added by '
      'models.register_architecture.')
  latent_dim: int = _field(20, 'Dimension of z.')
  hidden_dims: tuple[int, ...] = _field(
      (500,), 'MLP hidden layer widths, encoder order; the decoder mirrors them.')
  top_latent_dim: int = _field(
      0, 'Dimension of a second stochastic layer z_2 above z (0: one layer). '
      'Two layers: p(z_2) p(z|z_2) p(x|z) and q(z|x) q(z_2|z), the networks '
      'between z and z_2 of --top_hidden_dims (Burda et al. 2015). '
      '--architecture=mlp, --posterior=diagonal, --prior=standard_normal.')
  top_hidden_dims: tuple[int, ...] = _field(
      (100, 100), 'Two layers: hidden widths of q(z_2|z), bottom up; p(z|z_2) '
      'mirrors them.')
  conv_channels: tuple[int, ...] = _field(
      (32, 64), 'Conv: the channels of the two stride-2 convolutions.')
  activation: str = _field('relu', f'One of: {", ".join(nets.ACTIVATIONS)}.')
  output_bias: str = _field(
      'zero', 'The decoder\'s output bias at initialisation: zero, or '
      'data_mean: the mean training image as the likelihood\'s parameter '
      '(Bernoulli: logit(clip(mean, 0.001, 0.999)) per pixel, as Burda et '
      'al.\'s code; per channel for the conv decoder).')
  kernel_init: str = _field(
      'lecun_normal', f'Weight initialiser, one of: {", ".join(nets.INITS)}; '
      'biases start at zero, but for pytorch_default: PyTorch\'s defaults, '
      'weights and biases uniform on +-1/sqrt(fan_in).')
  likelihood: str = _field(
      'bernoulli', 'bernoulli (binary pixels: binarized data or '
      '--dynamic_binarization) or gaussian.')
  gaussian_variance: str = _field(
      'learned', 'Gaussian likelihood: "learned" (a per-pixel parameter) or a '
      'fixed variance, e.g. 0.01.')
  posterior: str = _field(
      'diagonal', 'q(z|x): diagonal, N(mean, diag(exp(log_var))); or '
      'full_covariance, N(mean, L L^T) with the encoder predicting the '
      'Cholesky factor L.')
  prior: str = _field(
      'standard_normal', 'p(z): standard_normal; learned_diagonal, N(m, '
      'diag(exp(v))) with m and v learned; or vamp, the VampPrior (Tomczak & '
      'Welling 2018), a uniform mixture of the posteriors at learned '
      'pseudo-inputs (no closed-form KL: with --objective=elbo it needs '
      '--noanalytic_kl).')
  vamp_components: int = _field(
      500, '--prior=vamp: the number of pseudo-inputs.')
  num_epochs: int = _field(10, 'Training epochs.')
  batch_size: int = _field(128, 'Examples per training step.')
  optimizer: str = _field('adam', 'adam, adamw or adagrad.')
  learning_rate: float = _field(1e-3, 'Peak learning rate.')
  lr_schedule: str = _field(
      'constant', 'constant; cosine (decay to 0 over the run); or burda '
      '(Burda et al. 2015: stage i = 0, ..., 7 lasts 3^i epochs at '
      'learning_rate * 10^(-i/7), 3,280 epochs in all; the last rate after); '
      'or step (times --lr_decay_factor after each of --lr_decay_epochs).')
  lr_decay_epochs: tuple[int, ...] = _field(
      (), '--lr_schedule=step: the epochs after which the learning rate is '
      'multiplied by --lr_decay_factor, e.g. 200,350.')
  lr_decay_factor: float = _field(
      0.1, '--lr_schedule=step: the factor of each decay.')
  adam_b1: float = _field(0.9, 'Adam beta1.')
  adam_b2: float = _field(0.999, 'Adam beta2.')
  adam_eps: float = _field(1e-8, 'Adam epsilon.')
  adam_variant: str = _field(
      'standard', 'standard: Adam as optax builds it (moments start at zero, '
      'epsilon added to the bias-corrected root); or iwae_code: the update of '
      'the code of Burda et al. (2015), on the gradient of the batch\'s sum '
      '(batch_size times the mean\'s): second moments start at one, '
      'epsilon is added to the uncorrected root, and each step moves by the '
      'moments before its gradient (see optim.scale_by_iwae_code_adam).')
  weight_decay: float | None = _field(
      None, 'L2 penalty weight_decay/2 ||params||^2 added to the loss per '
      'example (1/N for a N(0, I) prior on the parameters over N training '
      'examples, as Kingma & Welling 2013); decoupled for adamw. Unset: 0, '
      f'but {optim.ADAMW_WEIGHT_DECAY} for adamw (optax\'s default).')
  grad_clip_norm: float = _field(
      0.0, 'Clip gradients to this global norm; 0 turns clipping off.')
  skip_nonfinite_updates: bool = _field(
      False, 'Skip a step whose loss or gradients are not finite (counted as '
      'skipped_updates in metrics.jsonl) instead of stopping the run.')
  beta: float = _field(1.0, 'Weight of the KL term (1 is the ELBO).')
  kl_warmup_epochs: float = _field(
      0.0, 'Ramp the KL weight linearly from 0 to --beta over this many epochs.')
  objective: str = _field(
      'elbo', 'The training bound: elbo (--num_samples draws averaged) or '
      'iwae (the importance-weighted bound of --num_samples draws, Burda '
      'et al. 2015).')
  num_samples: int = _field(
      1, 'K: draws of z per example in the training objective.')
  analytic_kl: bool = _field(
      True, 'Closed-form KL in the training ELBO (else the sampled estimate); '
      'ELBO objective only.')
  seed: int = _field(
      0, 'Seed of the initialisation and of the ELBO\'s draws.')
  data_seed: int = _field(
      0, 'Seed of the data order and the dynamic binarization; the members of '
      'a sweep share it.')
  eval_batch_size: int = _field(
      500, 'Examples per evaluation batch (memory only, not results).')
  eval_iwae_samples: int = _field(
      1000, 'K of the final importance-weighted test NLL.')
  iwae_chunk_size: int = _field(
      1 << 16, 'Examples x samples evaluated at once by the IWAE estimate; '
      'bounds memory whatever K (memory only: the draws are the same).')
  checkpoints_to_keep: int = _field(3, 'Checkpoints kept in the workdir.')
  checkpoint_every: int = _field(
      1, 'Checkpoint every N epochs, and always the last; a resumed run goes '
      'back to the last checkpoint (later epochs train again, to the same '
      'numbers).')
  final_model: str = _field(
      'last', 'The parameters the final evaluation (results.json, images) '
      'uses: last, the last epoch\'s; or best_valid, those of the epoch with '
      'the highest validation ELBO (pythae\'s choice), which every checkpoint '
      'then holds beside the latest, so a resumed run selects the same.')
  progress: bool = _field(
      True, 'A progress bar on stderr (only when it is a terminal).')

  @property
  def spec(self):
    return data.get_spec(self.dataset, self.num_validation)


LR_SCHEDULES = ('constant', 'cosine', 'burda', 'step')
OUTPUT_BIASES = ('zero', 'data_mean')
FINAL_MODELS = ('last', 'best_valid')
ADAM_VARIANTS = ('standard', 'iwae_code')
BUILT_IN_ARCHITECTURES = ('mlp', 'conv', 'linear')

# Fields that do not change what a run computes: a resumed run may differ here.
NON_SEMANTIC_FIELDS = frozenset({
    'workdir', 'tfds_data_dir', 'tfds_manual_dir', 'progress',
    'eval_batch_size', 'iwae_chunk_size', 'checkpoint_every',
    # A run stopped by a non-finite step resumes with it turned on.
    'skip_nonfinite_updates'})


def define_flags(config_class=TrainConfig, flag_values=flags.FLAGS, exclude=()):
  """Defines one absl flag per field of `config_class`, but those in `exclude`."""
  for field in dataclasses.fields(config_class):
    if field.name in exclude:
      continue
    kind = _base_type(field.type)
    help_text = field.metadata['help']
    if kind is bool:
      flags.DEFINE_bool(field.name, field.default, help_text, flag_values=flag_values)
    elif kind is int:
      flags.DEFINE_integer(field.name, field.default, help_text, flag_values=flag_values)
    elif kind is float:
      flags.DEFINE_float(field.name, field.default, help_text, flag_values=flag_values)
    elif kind is tuple:
      flags.DEFINE_list(field.name, [str(v) for v in field.default], help_text,
                        flag_values=flag_values)
    else:
      flags.DEFINE_string(field.name, field.default, help_text, flag_values=flag_values)


def parse_flags(argv):
  """absl's flag parsing for `app.run(main, flags_parser=parse_flags)`.

  A flag that is unknown or has a value of the wrong type exits with status
  1 and one line on stderr, like every other bad input of the binaries.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise SystemExit('error: ' + ' '.join(str(e).split())) from None


def start_binary(argv, commands=()):
  """Checks a binary's positional arguments and quiets library INFO logs.

  Args:
    argv: the arguments absl passes to `main`.
    commands: the binary's commands, each one word; none is the default.

  Returns:
    The command given, or None.
  """
  given = argv[1:]
  if given and (len(given) > 1 or given[0] not in commands):
    hint = ''
    if len(commands) == 1:
      hint = f'; the only command is `{commands[0]}`'
    elif commands:
      hint = '; the commands are ' + ', '.join(f'`{c}`' for c in commands)
    raise SystemExit(f'error: unexpected arguments: {" ".join(given)}{hint}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # library INFO logs on request only
  return given[0] if given else None


def from_flags(config_class=TrainConfig, flag_values=flags.FLAGS, exclude=()):
  """Builds `config_class` from parsed flags; fields in `exclude` keep defaults."""
  values = {}
  for field in dataclasses.fields(config_class):
    if field.name in exclude:
      continue
    value = flag_values[field.name].value
    if _base_type(field.type) is tuple:
      value = _parse_ints(field.name, value)
    values[field.name] = value
  if values.get('tfds_manual_dir') is None and 'tfds_manual_dir' in values:
    values['tfds_manual_dir'] = data.default_manual_dir()
  return config_class(**values)


def from_json(path, **overrides):
  """The `TrainConfig` of a run's config.json, with `overrides` replacing fields.

  Fields the file lacks (written before they existed) keep their defaults;
  one it has that vaejax does not know is refused, in one line.
  """
  try:
    saved = json.loads(pathlib.Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f'{path} is unreadable ({e})') from None
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
  unknown = sorted(set(saved) - set(fields))
  if unknown:
    raise ConfigError(f'{path} has fields this vaejax does not know: '
                      f'{", ".join(unknown)}')
  values = {k: tuple(v) if _base_type(fields[k].type) is tuple else v
            for k, v in saved.items()}
  return TrainConfig(**{**values, **overrides})


def _base_type(annotation):
  if typing.get_origin(annotation) is tuple:
    return tuple
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  return args[0] if args else annotation


def _parse_ints(name, values):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(
        f'--{name} takes comma-separated integers, got {",".join(values)!r}') from None


def to_json(config):
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def validate(config):
  """Checks every field and combination; raises `ConfigError` (one line)."""
  c = config
  if not c.workdir:
    raise ConfigError('--workdir is required')
  try:
    spec = c.spec
  except data.DataError as e:
    raise ConfigError(str(e)) from None
  _check_choice('architecture', c.architecture, tuple(models.ARCHITECTURES))
  _check_choice('activation', c.activation, nets.ACTIVATIONS)
  _check_choice('kernel_init', c.kernel_init, nets.INITS)
  _check_choice('output_bias', c.output_bias, OUTPUT_BIASES)
  _check_choice('final_model', c.final_model, FINAL_MODELS)
  _check_choice('adam_variant', c.adam_variant, ADAM_VARIANTS)
  if c.output_bias == 'data_mean' and c.architecture not in BUILT_IN_ARCHITECTURES:
    raise ConfigError(f'--output_bias=data_mean sets the output layer of '
                      f'vaejax\'s networks ({", ".join(BUILT_IN_ARCHITECTURES)}), '
                      f'not of --architecture={c.architecture}')
  _check_choice('likelihood', c.likelihood, tuple(heads.OBSERVATION_HEADS))
  _check_choice('posterior', c.posterior, tuple(heads.POSTERIOR_HEADS))
  _check_choice('prior', c.prior, tuple(heads.PRIOR_HEADS))
  _check_positive('vamp_components', c.vamp_components)
  if c.prior == 'vamp' and c.posterior == 'full_covariance':
    raise ConfigError('--prior=vamp is a mixture of diagonal posteriors: it '
                      'needs --posterior=diagonal')
  if c.prior == 'vamp' and c.objective == 'elbo' and c.analytic_kl:
    raise ConfigError('--prior=vamp has no closed-form KL(q || p): add '
                      '--noanalytic_kl (the KL estimated from the draws)')
  _check_choice('optimizer', c.optimizer, ('adam', 'adamw', 'adagrad'))
  _check_choice('lr_schedule', c.lr_schedule, LR_SCHEDULES)
  _check_choice('objective', c.objective, tuple(objectives.OBJECTIVES))
  _check_positive('latent_dim', c.latent_dim)
  _check_positive('num_epochs', c.num_epochs)
  _check_positive('batch_size', c.batch_size)
  _check_positive('num_samples', c.num_samples)
  _check_positive('eval_batch_size', c.eval_batch_size)
  _check_positive('eval_iwae_samples', c.eval_iwae_samples)
  _check_positive('iwae_chunk_size', c.iwae_chunk_size)
  _check_positive('checkpoints_to_keep', c.checkpoints_to_keep)
  _check_positive('checkpoint_every', c.checkpoint_every)
  _check_positive('learning_rate', c.learning_rate)
  _check_positive('adam_eps', c.adam_eps)
  for name in ('adam_b1', 'adam_b2'):
    if not 0 <= getattr(c, name) < 1:
      raise ConfigError(f'--{name} must be in [0, 1), got {getattr(c, name)}')
  for name in ('grad_clip_norm', 'weight_decay', 'beta', 'kl_warmup_epochs',
               'seed', 'data_seed'):
    value = getattr(c, name)
    if value is None and name == 'weight_decay':
      continue
    if not (math.isfinite(value) and value >= 0):
      raise ConfigError(f'--{name} must be a finite number >= 0, got {value}')
  if c.lr_schedule == 'step' and (
      not c.lr_decay_epochs or min(c.lr_decay_epochs) < 1
      or len(set(c.lr_decay_epochs)) < len(c.lr_decay_epochs)):
    raise ConfigError('--lr_schedule=step needs --lr_decay_epochs, distinct '
                      'positive epochs, e.g. 200,350')
  if not (math.isfinite(c.lr_decay_factor) and 0 < c.lr_decay_factor <= 1):
    raise ConfigError(f'--lr_decay_factor must be in (0, 1], got '
                      f'{c.lr_decay_factor}')
  if c.objective == 'iwae' and (c.beta != 1 or c.kl_warmup_epochs):
    raise ConfigError('--objective=iwae is the importance-weighted bound '
                      'itself: it takes no --beta or --kl_warmup_epochs')
  _check_no_ignored_flags(c)
  _check_top_layer(c)
  if c.architecture == 'mlp':
    if not c.hidden_dims or min(c.hidden_dims) < 1:
      raise ConfigError(
          f'--hidden_dims must be one or more positive widths, got '
          f'{",".join(map(str, c.hidden_dims)) or "nothing"}')
  elif c.architecture == 'conv':
    if len(c.conv_channels) != 2 or min(c.conv_channels) < 1:
      raise ConfigError('--conv_channels must be two positive channel counts')
    height, width, _ = spec.image_shape
    if height % 4 or width % 4:
      raise ConfigError(f'--architecture=conv needs image sides divisible by 4; '
                        f'{spec.name} has {height}x{width}')
  if c.batch_size > spec.sizes[0]:
    raise ConfigError(f'--batch_size={c.batch_size} is larger than the '
                      f'{spec.sizes[0]} training examples of {spec.name}')
  if c.likelihood == 'gaussian' and c.gaussian_variance != 'learned':
    try:
      variance = float(c.gaussian_variance)
    except ValueError:
      variance = -1.0
    if not (math.isfinite(variance) and variance > 0):
      raise ConfigError(f'--gaussian_variance must be "learned" or a positive '
                        f'number, got {c.gaussian_variance!r}')
  _check_likelihood_fits_data(c, spec)


def _differs(c, name):
  return getattr(c, name) != _DEFAULTS[name]


def _check_no_ignored_flags(c):
  """Refuses a flag set away from its default where the run would ignore it."""
  ignored = []
  if c.lr_schedule != 'step':
    ignored += [(n, '--lr_schedule=step') for n in ('lr_decay_epochs',
                                                    'lr_decay_factor')]
  if c.objective == 'iwae':
    ignored.append(('analytic_kl', '--objective=elbo (the importance-weighted '
                    'bound has no KL term)'))
  if c.likelihood != 'gaussian':
    ignored.append(('gaussian_variance', '--likelihood=gaussian'))
  if c.optimizer == 'adagrad':
    ignored += [(n, '--optimizer=adam or adamw')
                for n in ('adam_b1', 'adam_b2', 'adam_eps', 'adam_variant')]
  if c.prior != 'vamp':
    ignored.append(('vamp_components', '--prior=vamp'))
  if not c.top_latent_dim:
    ignored.append(('top_hidden_dims', '--top_latent_dim above 0 (two layers)'))
  if c.architecture == 'mlp':
    ignored.append(('conv_channels', '--architecture=conv'))
  if c.architecture == 'conv':
    ignored.append(('hidden_dims', '--architecture=mlp'))
  if c.architecture == 'linear':
    ignored += [(n, '--architecture=mlp or conv') for n in ('hidden_dims',
                                                           'conv_channels',
                                                           'activation')]
  for name, needs in ignored:
    if _differs(c, name):
      value = getattr(c, name)
      shown = (f'--no{name}' if value is False else
               f'--{name}={",".join(map(str, value)) if isinstance(value, tuple) else value}')
      raise ConfigError(f'{shown} has no effect here: --{name} applies to '
                        f'{needs} only; drop it')


def _check_top_layer(c):
  if c.top_latent_dim == 0:
    return
  if not (c.top_latent_dim > 0 and math.isfinite(c.top_latent_dim)):
    raise ConfigError(f'--top_latent_dim must be 0 (one layer) or positive, got '
                      f'{c.top_latent_dim}')
  if not c.top_hidden_dims or min(c.top_hidden_dims) < 1:
    raise ConfigError(
        f'--top_hidden_dims must be one or more positive widths, got '
        f'{",".join(map(str, c.top_hidden_dims)) or "nothing"}')
  for name, needs in (('architecture', 'mlp'), ('posterior', 'diagonal'),
                      ('prior', 'standard_normal')):
    if getattr(c, name) != needs:
      raise ConfigError(f'--top_latent_dim (two stochastic layers) needs '
                        f'--{name}={needs}, got --{name}={getattr(c, name)}')


def _check_likelihood_fits_data(c, spec):
  if c.dynamic_binarization and spec.pixels != 'grey':
    raise ConfigError(f'--dynamic_binarization needs grey-level data; '
                      f'{spec.name} has {spec.pixels} values')
  if c.likelihood == 'bernoulli' and spec.pixels == 'grey' and not c.dynamic_binarization:
    raise ConfigError(f'--likelihood=bernoulli needs binary pixels: {spec.name} '
                      'has grey levels; add --dynamic_binarization or use '
                      '--likelihood=gaussian')
  if c.likelihood == 'bernoulli' and spec.pixels == 'real':
    raise ConfigError(f'--likelihood=bernoulli needs binary pixels: {spec.name} '
                      'has real values; use --likelihood=gaussian')


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _check_choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f'--{name}={value!r} is not one of: {", ".join(choices)}')


def _check_positive(name, value):
  if not (math.isfinite(value) and value > 0):
    raise ConfigError(f'--{name} must be positive, got {value}')
