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

from vaejax import checks
from vaejax import optim
from vaejax.bounds import negative_elbo
from vaejax.bounds import negative_iwae_bound


def elbo_loss(*, num_samples=1, beta=1.0, analytic_kl=True):
  """-ELBO averaged over the batch (`bounds.negative_elbo`).

  Args:
    num_samples: draws of z per example.
    beta: the KL weight, a number or a function of the global step.
    analytic_kl: closed-form KL, else the sampled estimate.

  Returns:
    `loss_fn(model, batch, key, step) -> (loss, per-example ElboTerms)`.
  """

  def loss_fn(model, batch, key, step):
    weight = beta(step) if callable(beta) else beta
    return negative_elbo(model, batch, key, num_samples=num_samples,
                         beta=weight, analytic_kl=analytic_kl)

  return loss_fn


def iwae_loss(*, num_samples):
  """-L_K averaged over the batch (`bounds.negative_iwae_bound`, Burda et al. 2015).

  Returns:
    `loss_fn(model, batch, key, step) -> (loss, [B] bounds)`.
  """

  def loss_fn(model, batch, key, step):
    del step
    return negative_iwae_bound(model, batch, key, num_samples=num_samples)

  return loss_fn


def _elbo(config, steps_per_epoch):
  return elbo_loss(
      num_samples=config.num_samples, analytic_kl=config.analytic_kl,
      beta=lambda step: optim.kl_weight(config, step, steps_per_epoch))


def _iwae(config, steps_per_epoch):
  del steps_per_epoch
  return iwae_loss(num_samples=config.num_samples)


# --objective -> factory(config, steps_per_epoch) returning a loss_fn.
OBJECTIVES = {'elbo': _elbo, 'iwae': _iwae}
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
  if c.prior == 'vamp' and c.objective == 'elbo' and c.analytic_kl:
    raise checks.ConfigError('--prior=vamp has no closed-form KL(q || p): add '
                             '--noanalytic_kl (the KL estimated from the draws)')
  if c.objective == 'iwae' and (c.beta != 1 or c.kl_warmup_epochs):
    raise checks.ConfigError('--objective=iwae is the importance-weighted bound '
                             'itself: it takes no --beta or --kl_warmup_epochs')
  if c.objective == 'iwae':
    checks.refuse_ignored(c, [('analytic_kl', '--objective=elbo (the '
                                'importance-weighted bound has no KL term)')])
