"""The training configuration: one dataclass, its absl flags, and its checks.

Every field of `TrainConfig` is a flag of `experiments.train` (and of the
sweep), with the field's default and help text, so flags, config.json and the
library never disagree. `validate` checks everything that can be checked
before any data is loaded or anything compiled, and raises `ConfigError` with
a one-line message: the run's own fields here, the others by the modules
they belong to (`check_config` of `vaejax.architectures`, `optim`,
`objectives` and `data`), which this module imports only to call them.
"""

import dataclasses
import json
import pathlib
import typing

from absl import flags
from absl import logging

from vaejax import checks
from vaejax import data


ConfigError = checks.ConfigError  # a bad flag value or combination, in one line


_field = checks.flag_field


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
  activation: str = _field(
      'relu', 'relu, tanh, elu, gelu, softplus, swish or leaky_relu.')
  output_bias: str = _field(
      'zero', 'The decoder\'s output bias at initialisation: zero, or '
      'data_mean: the mean training image as the likelihood\'s parameter '
      '(Bernoulli: logit(clip(mean, 0.001, 0.999)) per pixel, as Burda et '
      'al.\'s code; per channel for the conv decoder).')
  kernel_init: str = _field(
      'lecun_normal', 'Weight initialiser: lecun_normal (Flax\'s default), '
      'glorot_normal, glorot_uniform, he_normal, normal (N(0, 0.01^2)), or '
      'pytorch_default; biases start at zero, but for pytorch_default: '
      'PyTorch\'s defaults, '
      'weights and biases uniform on +-1/sqrt(fan_in).')
  likelihood: str = _field(
      'bernoulli', 'bernoulli (binary pixels: binarized data or '
      '--dynamic_binarization), gaussian, or gaussian_sigmoid (its mean the '
      'sigmoid of the decoder\'s output, for data in [0, 1]: Kingma & '
      'Welling\'s Frey Face decoder).')
  gaussian_variance: str = _field(
      'learned', 'Gaussian likelihoods: "learned" (a per-pixel parameter) or a '
      'fixed variance, e.g. 0.01.')
  posterior: str = _field(
      'diagonal', 'q(z|x): diagonal, N(mean, diag(exp(log_var))); or '
      'full_covariance, N(mean, L L^T) with the encoder predicting the '
      'Cholesky factor L; or the flows planar, the diagonal Gaussian through '
      '--flow_steps maps z + u tanh(w^T z + b) whose u, w, b the encoder '
      'gives (Rezende & Mohamed 2015), and iaf, through --flow_steps inverse '
      'autoregressive steps z <- sigma z + (1 - sigma) m, [m, s] = MADE(z, h) '
      'of the encoder\'s context h (Kingma et al. 2016; the flows have no '
      'closed-form KL: with --objective=elbo they need --noanalytic_kl); or '
      'a head registered with vaejax.heads.register_posterior_head.')
  flow_steps: int = _field(
      2, '--posterior=planar and iaf: the number of maps T.')
  flow_hidden_dims: tuple[int, ...] = _field(
      (320, 320), '--posterior=iaf: the hidden widths of each step\'s MADE.')
  flow_context_dim: int = _field(
      32, '--posterior=iaf: the size of the context h the encoder gives each '
      'step\'s MADE (0: none).')
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
      'but 1e-4 for adamw (optax\'s default).')
  grad_clip_norm: float = _field(
      0.0, 'Clip gradients to this global norm; 0 turns clipping off.')
  skip_nonfinite_updates: bool = _field(
      False, 'Skip a step whose loss or gradients are not finite (counted as '
      'skipped_updates in metrics.jsonl) instead of stopping the run.')
  beta: float = _field(1.0, 'Weight of the KL term (1 is the ELBO).')
  kl_warmup_epochs: float = _field(
      0.0, 'Ramp the KL weight linearly from 0 to --beta over this many epochs.')
  objective: str = _field(
      'elbo', 'The training bound: elbo (--num_samples draws averaged), '
      'iwae (the importance-weighted bound of --num_samples draws, Burda '
      'et al. 2015), or the bounds of Rainforth et al. 2018: miwae '
      '(--num_groups IWAE bounds averaged), piwae (the decoder on the IWAE '
      'bound of all draws, the encoder on MIWAE), ciwae (--ciwae_beta * ELBO '
      '+ (1 - --ciwae_beta) * IWAE).')
  num_samples: int = _field(
      1, 'K: draws of z per example in the training objective (per group '
      'for miwae and piwae).')
  gradient_estimator: str = _field(
      'reparameterized', 'The gradient of the training bound: reparameterized '
      '(the bound\'s own), stl (sticking the landing, Roeder et al. 2017: '
      'log q at the posterior\'s parameters stopped; elbo with '
      '--noanalytic_kl, iwae) or dreg (doubly reparameterised, Tucker et al. '
      '2019; iwae).')
  num_groups: int = _field(
      1, 'M: groups of --num_samples draws of --objective=miwae and piwae.')
  ciwae_beta: float = _field(
      0.05, 'beta of --objective=ciwae, in [0, 1]: 1 is the ELBO, 0 the IWAE '
      'bound.')
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


FINAL_MODELS = ('last', 'best_valid')

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
  from vaejax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_after_a_failed_restore()  # the binary ends at the error
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
  """Checks every field and combination; raises `ConfigError` (one line).

  The run's own fields are checked here; the model's, the optimiser's, the
  objective's and the data's by their modules (`check_config` of
  `vaejax.architectures`, `optim`, `objectives` and `data`).
  """
  # pylint: disable=g-import-not-at-top  (the library, only when checking)
  from vaejax import architectures
  from vaejax import objectives
  from vaejax import optim
  c = config
  if not c.workdir:
    raise ConfigError('--workdir is required')
  try:
    spec = c.spec
  except data.DataError as e:
    raise ConfigError(str(e)) from None
  architectures.check_config(c, spec)
  optim.check_config(c)
  objectives.check_config(c)
  checks.check_choice('final_model', c.final_model, FINAL_MODELS)
  checks.check_positive(c, 'num_epochs', 'batch_size', 'eval_batch_size',
                        'eval_iwae_samples', 'iwae_chunk_size',
                        'checkpoints_to_keep', 'checkpoint_every')
  checks.check_non_negative(c, 'seed', 'data_seed')
  data.check_config(c, spec)


