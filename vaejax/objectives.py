"""Training objectives: `loss_fn(model, batch, key, step) -> (loss, aux)`.

The train step differentiates whatever loss function it is given; a new
objective is a new function of this signature, not a change to the trainer.
`key` is the step's key (the batch's draws come from it) and `step` the
global step, for objectives that change over training (a KL warm-up).

`--objective` names one of `OBJECTIVES`, each a factory `(config,
steps_per_epoch) -> loss_fn`; `register_objective` adds one, as
`models.register_architecture` adds a network, without touching the
trainer, and the flag then accepts it.
"""

import functools

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import estimators
from vaejax import heads
from vaejax import optim
from vaejax.bounds import _batch_keys
from vaejax.bounds import negative_elbo
from vaejax.bounds import negative_iwae_bound


def negative_mean(name, per_example, batch, key):
  """(-mean over `batch` of `per_example(x, key)`, the `[B]` values), each
  example's key split from `key` as `bounds.negative_elbo` splits them."""
  values = jax.vmap(per_example)(batch, _batch_keys(name, key, batch))
  return -jnp.mean(values), values


def elbo_loss(*, num_samples=1, beta=1.0, analytic_kl=True,
              estimator='reparameterized'):
  """-ELBO averaged over the batch (`bounds.negative_elbo`).

  Args:
    num_samples: draws of z per example.
    beta: the KL weight, a number or a function of the global step.
    analytic_kl: closed-form KL, else the sampled estimate.
    estimator: 'reparameterized', or 'stl' (with `analytic_kl=False`:
      `estimators.elbo_surrogate`).

  Returns:
    `loss_fn(model, batch, key, step) -> (loss, per-example ElboTerms, or
    the [B] ELBOs for 'stl')`.
  """

  def loss_fn(model, batch, key, step):
    weight = beta(step) if callable(beta) else beta
    if estimator == 'reparameterized':
      return negative_elbo(model, batch, key, num_samples=num_samples,
                           beta=weight, analytic_kl=analytic_kl)
    return negative_mean('elbo_loss', functools.partial(
        estimators.elbo_surrogate, model, num_samples=num_samples, beta=weight,
        estimator=estimator), batch, key)

  return loss_fn


def iwae_loss(*, num_samples, estimator='reparameterized'):
  """-L_K averaged over the batch (`bounds.negative_iwae_bound`, Burda et al.
  2015), with the gradient of `estimator` (`estimators.iwae_surrogate`).

  Returns:
    `loss_fn(model, batch, key, step) -> (loss, [B] bounds)`.
  """

  def loss_fn(model, batch, key, step):
    del step
    if estimator == 'reparameterized':
      return negative_iwae_bound(model, batch, key, num_samples=num_samples)
    return negative_mean('iwae_loss', functools.partial(
        estimators.iwae_surrogate, model, num_samples=num_samples,
        estimator=estimator), batch, key)

  return loss_fn


def bound_loss(name, bound, **kwargs):
  """-`bound(model, x, key, **kwargs)` averaged over the batch: the loss of
  one of `vaejax.estimators`' bounds, `loss_fn(model, batch, key, step) ->
  (loss, [B] bounds)`."""

  def loss_fn(model, batch, key, step):
    del step
    return negative_mean(name, functools.partial(bound, model, **kwargs),
                         batch, key)

  return loss_fn


def _elbo(config, steps_per_epoch):
  return elbo_loss(
      num_samples=config.num_samples, analytic_kl=config.analytic_kl,
      beta=lambda step: optim.kl_weight(config, step, steps_per_epoch),
      estimator=config.gradient_estimator)


def _iwae(config, steps_per_epoch):
  del steps_per_epoch
  return iwae_loss(num_samples=config.num_samples,
                   estimator=config.gradient_estimator)


def _miwae(config, steps_per_epoch):
  del steps_per_epoch
  return bound_loss('miwae', estimators.miwae_bound,
                    num_groups=config.num_groups, num_samples=config.num_samples)


def _piwae(config, steps_per_epoch):
  del steps_per_epoch
  return bound_loss('piwae', estimators.piwae_surrogate,
                    num_groups=config.num_groups, num_samples=config.num_samples)


def _ciwae(config, steps_per_epoch):
  del steps_per_epoch
  return bound_loss('ciwae', estimators.ciwae_bound,
                    num_samples=config.num_samples, beta=config.ciwae_beta)


# --objective -> factory(config, steps_per_epoch) returning a loss_fn.
OBJECTIVES = {'elbo': _elbo, 'iwae': _iwae, 'miwae': _miwae, 'piwae': _piwae,
              'ciwae': _ciwae}
# The importance-weighted bounds: no KL term, no beta.
IMPORTANCE_WEIGHTED = ('iwae', 'miwae', 'piwae', 'ciwae')
BUILT_IN_OBJECTIVES = tuple(OBJECTIVES)


def register_objective(name, factory):
  """Adds `factory(config, steps_per_epoch) -> loss_fn` as `--objective=name`.

  `loss_fn(model, batch, key, step) -> (loss, aux)`, with `model` a model
  of the protocol (`vaejax.models`), `batch` `[B, ...]` and `step` the
  global step; the trainer differentiates `loss` and logs its mean.
  """
  if name in OBJECTIVES:
    raise ValueError(f'objective {name!r} is already registered')
  OBJECTIVES[name] = factory


def from_config(config, steps_per_epoch):
  """The loss of `config.objective` (with an ELBO's KL warm-up in steps)."""
  return OBJECTIVES[config.objective](config, steps_per_epoch)


def check_config(c):
  """The objective's fields of a `TrainConfig` `c`; raises
  `checks.ConfigError` in one line."""
  checks.check_choice('objective', c.objective, tuple(OBJECTIVES))
  checks.check_positive(c, 'num_samples')
  checks.check_non_negative(c, 'beta', 'kl_warmup_epochs')
  if c.objective == 'elbo' and c.analytic_kl:
    sampled = [f'--{name}={getattr(c, name)}' for name, traits in (
        ('posterior', heads.posterior_traits(c.posterior)),
        ('prior', heads.prior_traits(c.prior))) if not traits.closed_form_kl]
    if sampled:
      raise checks.ConfigError(f'{" and ".join(sampled)} has no closed-form '
                               'KL(q || p): add --noanalytic_kl (the KL '
                               'estimated from the draws)')
  weighted = c.objective in IMPORTANCE_WEIGHTED
  if weighted and (c.beta != 1 or c.kl_warmup_epochs):
    raise checks.ConfigError(f'--objective={c.objective} is an importance-weighted '
                             'bound itself: it takes no --beta or --kl_warmup_epochs')
  if weighted:
    checks.refuse_ignored(c, [('analytic_kl', '--objective=elbo (the '
                                'importance-weighted bounds have no KL term)')])
  checks.check_choice('gradient_estimator', c.gradient_estimator,
                      estimators.ESTIMATORS)
  checks.check_positive(c, 'num_groups')
  checks.refuse_ignored(c, [
      (name, needs) for name, needs, used in (
          ('num_groups', '--objective=miwae and piwae',
           c.objective in ('miwae', 'piwae')),
          ('ciwae_beta', '--objective=ciwae', c.objective == 'ciwae'))
      if not used])
  if not 0 <= c.ciwae_beta <= 1:
    raise checks.ConfigError(f'--ciwae_beta must be in [0, 1], got {c.ciwae_beta}')
  _check_estimator(c)


def _check_estimator(c):
  """The objectives that `--gradient_estimator` has a definition for."""
  estimator = c.gradient_estimator
  if estimator == 'reparameterized':
    return
  if c.objective not in ('elbo', 'iwae'):
    raise checks.ConfigError(
        f'--gradient_estimator={estimator} is defined for --objective=elbo '
        f'(stl) and iwae (stl, dreg); --objective={c.objective} trains with '
        'its own gradient (--gradient_estimator=reparameterized)')
  if not heads.posterior_traits(c.posterior).log_prob:
    raise checks.ConfigError(
        f'--gradient_estimator={estimator} evaluates log q(z) at the draws with '
        f'the parameters stopped, and --posterior={c.posterior} has no usable '
        'log_prob(z) (no inverse in closed form, or one too ill-conditioned '
        'to train through: vaejax.heads.Traits); use --gradient_estimator='
        'reparameterized')
  if c.objective == 'elbo' and estimator == 'dreg':
    raise checks.ConfigError(
        '--gradient_estimator=dreg reweighs the importance-weighted bound\'s '
        'draws (--objective=iwae); for the ELBO use --gradient_estimator=stl')
  if c.objective == 'elbo' and c.analytic_kl:
    raise checks.ConfigError(
        '--gradient_estimator=stl drops the score term of log q in a KL '
        'estimated from the draws; a closed-form KL has none: add '
        '--noanalytic_kl')
