"""Optimisers, learning-rate schedules and the KL warm-up.

A scheduled learning rate is a function of the run's global step, which the
train step passes to `update` as `step=`: it is not optax's own update count,
so a step skipped for a non-finite loss (`--skip_nonfinite_updates`) does
not delay the schedule.
"""

import math

import jax
import jax.numpy as jnp
import optax

from vaejax import checks

# What --optimizer=adamw decays by when --weight_decay is unset (optax's).
ADAMW_WEIGHT_DECAY = 1e-4

# Burda et al. (2015): stage i lasts 3^i epochs at 10^(-i/7) times the
# initial learning rate, for i = 0, ..., 7.
BURDA_STAGES = 8


def burda_stage_epochs():
  """The epochs at which the stages of Burda et al.'s schedule end."""
  return [(3 ** (i + 1) - 1) // 2 for i in range(BURDA_STAGES)]


def learning_rate_schedule(config, steps_per_epoch):
  """The learning rate of `config`: a number, or an optax schedule of the step."""
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate,
                                       config.num_epochs * steps_per_epoch)
  if config.lr_schedule in ('burda', 'step'):
    if config.lr_schedule == 'burda':
      epochs, factor = burda_stage_epochs()[:-1], 10 ** (-1 / 7)
    else:
      epochs, factor = config.lr_decay_epochs, config.lr_decay_factor
    # The rate drops from the first step of the epoch after each of `epochs`.
    return optax.piecewise_constant_schedule(
        config.learning_rate,
        {epoch * steps_per_epoch: factor for epoch in epochs})
  return config.learning_rate


def scale_by_learning_rate(learning_rate):
  """-learning_rate * updates; a schedule is read at the `step=` of `update`.

  A number gives optax's stateless scaling. A schedule gives a
  transformation whose `update(updates, state, params, *, step)` needs the
  global step (0-based), so the rate follows the step count of the run,
  skipped steps included.
  """
  if not callable(learning_rate):
    return optax.scale_by_learning_rate(learning_rate)

  def update(updates, state, params=None, *, step, **unused_extra_args):
    del params
    rate = learning_rate(step)
    return jax.tree.map(lambda u: -rate * u, updates), state

  return optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update)


def scale_by_iwae_code_adam(b1, b2, eps, gradient_scale):
  """Adam's direction as the code of Burda et al. (2015) computes it.

  That code (Theano) differentiates the sum of the batch's bounds, starts the
  second moments at one, adds epsilon to their uncorrected root, and, its
  updates being simultaneous, moves the parameters with the moments before
  this step's gradient: at step t = 1, 2, ...

    direction = sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps),
    then g = gradient_scale * gradient, m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2,

  from m = 0 and v = 1 (so the first direction is zero). With
  `gradient_scale` the batch size, the gradient of vaejax's batch mean becomes
  that of the sum. The learning rate is applied after, as for optax's Adam.
  """
  def init(params):
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=jax.tree.map(jnp.zeros_like, params),
        nu=jax.tree.map(jnp.ones_like, params))

  def update(updates, state, params=None):
    del params
    t = (state.count + 1).astype(jnp.float32)
    correction = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    directions = jax.tree.map(
        lambda m, v: (correction * m / (jnp.sqrt(v) + eps)).astype(m.dtype),
        state.mu, state.nu)
    grads = jax.tree.map(lambda g: gradient_scale * g, updates)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
    return directions, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def build_optimizer(config, steps_per_epoch):
  """optax optimizer with the learning-rate schedule, weight decay, clipping.

  adam and adagrad as optax builds them, with the rate scaled by
  `scale_by_learning_rate`; `update` takes `step=` when the rate is
  scheduled.
  """
  learning_rate = learning_rate_schedule(config, steps_per_epoch)
  weight_decay = config.weight_decay
  if weight_decay is None:
    weight_decay = ADAMW_WEIGHT_DECAY if config.optimizer == 'adamw' else 0.0
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if weight_decay > 0 and config.optimizer != 'adamw':
    # The gradient of weight_decay/2 ||params||^2, added to the loss's.
    parts.append(optax.add_decayed_weights(weight_decay))
  if config.optimizer == 'adagrad':
    parts.append(optax.scale_by_rss())
  elif config.adam_variant == 'iwae_code':
    parts.append(scale_by_iwae_code_adam(config.adam_b1, config.adam_b2,
                                         config.adam_eps, config.batch_size))
  else:
    parts.append(optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2,
                                     eps=config.adam_eps))
  if config.optimizer == 'adamw':
    parts.append(optax.add_decayed_weights(weight_decay))  # decoupled
  parts.append(scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


def kl_weight(config, step, steps_per_epoch):
  """beta at global `step`, ramped linearly over `kl_warmup_epochs`."""
  warmup_steps = config.kl_warmup_epochs * steps_per_epoch
  if warmup_steps <= 0:
    return jnp.asarray(config.beta, jnp.float32)
  return config.beta * jnp.minimum(1.0, (step + 1) / warmup_steps)


LR_SCHEDULES = ('constant', 'cosine', 'burda', 'step')
ADAM_VARIANTS = ('standard', 'iwae_code')


def check_config(c):
  """The optimiser's fields of a `TrainConfig` `c`; raises
  `checks.ConfigError` in one line."""
  checks.check_choice('adam_variant', c.adam_variant, ADAM_VARIANTS)
  checks.check_choice('optimizer', c.optimizer, ('adam', 'adamw', 'adagrad'))
  checks.check_choice('lr_schedule', c.lr_schedule, LR_SCHEDULES)
  checks.check_positive(c, 'learning_rate', 'adam_eps')
  for name in ('adam_b1', 'adam_b2'):
    if not 0 <= getattr(c, name) < 1:
      raise checks.ConfigError(f'--{name} must be in [0, 1), got {getattr(c, name)}')
  checks.check_non_negative(c, 'grad_clip_norm', 'weight_decay')
  if c.lr_schedule == 'step' and (
      not c.lr_decay_epochs or min(c.lr_decay_epochs) < 1
      or len(set(c.lr_decay_epochs)) < len(c.lr_decay_epochs)):
    raise checks.ConfigError('--lr_schedule=step needs --lr_decay_epochs, '
                             'distinct positive epochs, e.g. 200,350')
  if not (math.isfinite(c.lr_decay_factor) and 0 < c.lr_decay_factor <= 1):
    raise checks.ConfigError(f'--lr_decay_factor must be in (0, 1], got '
                             f'{c.lr_decay_factor}')
  ignored = [(n, '--lr_schedule=step') for n in ('lr_decay_epochs',
                                                 'lr_decay_factor')] * (
                                                     c.lr_schedule != 'step')
  ignored += [(n, '--optimizer=adam or adamw') for n in (
      'adam_b1', 'adam_b2', 'adam_eps', 'adam_variant')] * (c.optimizer == 'adagrad')
  checks.refuse_ignored(c, ignored)
