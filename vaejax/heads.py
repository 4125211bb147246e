"""The parts of the Flax VAE (`vaejax.nets`), each chosen by name from a registry.

A VAE of `vaejax.nets` is an encoder network, a decoder network and three heads:

  posterior head     the encoder's raw output `[size]` -> q(z|x)   --posterior
  prior head         p(z)                                          --prior
  observation head   the decoder's output -> log p(x|z), E[x|z]    --likelihood

A head is made once per model by its factory, `factory(model, rngs)`. The
factory reads what it needs from the model under construction (`latent_dim`,
`data_shape`, its options such as `gaussian_variance` or `vamp_components`),
adds the parameters the head owns to the model as `nnx.Param` attributes
(their checkpoint paths are those names), and returns the head: a hashable
object without arrays (a frozen dataclass), called with the model to read
them. `register_posterior_head`, `register_prior_head` and
`register_observation_head` add one, and the flag accepts its name. The
shipped heads are the classes below; a new posterior head subclasses
`PosteriorHead`, a new prior `PriorHead`.

A posterior head's `blocks` lays out its raw output as consecutive blocks,
each of whose entries for latent dimensions 0..k-1 come first (a mean and
a log-variance are two blocks of k; the rows of a Cholesky factor below its
diagonal, one of k (k - 1) / 2). A member of k latent dimensions in the
vectorised sweep pads into a model of L by placing each block at the start
of its larger self (`vaejax.sweep.padding`), and `masked` makes the
switched-off dimensions N(0, 1), independent of the others, so they add
nothing to the KL.
"""

import dataclasses
import math
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from vaejax import distributions
from vaejax import flows
from vaejax import likelihoods

# The encoder's log-variance is the identity of the network's output on this
# range and saturates within 1 beyond it (`bound_log_var`).
LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0

# The learned observation log-variance of the Gaussian likelihood has a floor:
# identity above log(1e-4) (a standard deviation of 0.01, 2.55 grey levels
# of 255), saturating within 1 below. Without one, a pixel that is the same
# in every training image (67 of MNIST's are 0 throughout) has a density
# without a maximum: its variance shrinks for ever and the "ELBO" rises
# without limit, then overflows. With it, one pixel adds at most
# -1/2 (log 2 pi + OBSERVATION_LOG_VAR_MIN - 1) = 4.19 nats to log p(x|z).
OBSERVATION_LOG_VAR_MIN = math.log(1e-4)

# VampPrior pseudo-inputs: free parameters initialised N(0.05, 0.01^2), seen
# through clip(u, 0, 1) where the data are pixels in [0, 1] (Tomczak &
# Welling's hardtanh), as the reference code's MNIST loaders set them
# (utils/load_data.py; its command-line default mean, -0.05, which they
# override, would start every pixel below the clip, where no gradient passes).
PSEUDO_INPUT_INIT = (0.05, 0.01)


def bound_log_var(raw, low=LOG_VAR_MIN, high=LOG_VAR_MAX):
  """The identity on [low, high]; beyond, `high + tanh(raw - high)` (and below).

  Smooth (value and slope 1 match at the ends) and bounded to
  [low - 1, high + 1], so exp(log_var) <= e^21 cannot overflow float32 and
  -log_var, the KL's term, stays finite; beyond an end the slope,
  1 - tanh^2, fades but does not stop at once (a hard clip would), so an
  output pushed a little past an end still gets gradients that can bring
  it back. Inside the range the value is the input bit for bit: models that
  stay there train exactly as without the bound.
  """
  return jnp.where(raw > high, high + jnp.tanh(raw - high),
                   jnp.where(raw < low, low + jnp.tanh(raw - low), raw))


def mask_posterior(q, on):
  """A library Gaussian q `[L]` with the dimensions where `on` is False
  N(0, 1) and independent of the rest (a full covariance's factor is the
  identity there)."""
  if isinstance(q, distributions.FullCovarianceGaussian):
    both = on[:, None] & on[None, :]
    eye = jnp.eye(on.shape[0], dtype=q.scale_tril.dtype)
    return distributions.FullCovarianceGaussian(
        jnp.where(on, q.mean, 0.0), jnp.where(both, q.scale_tril, eye))
  if isinstance(q, distributions.DiagonalGaussian):
    return distributions.DiagonalGaussian(jnp.where(on, q.mean, 0.0),
                                          jnp.where(on, q.log_var, 0.0))
  raise TypeError(f'a vectorised sweep cannot pad a {type(q).__name__} '
                  'posterior; give its head a masked(q, on) (vaejax.heads)')


def mask_prior(p, on):
  """A library prior with the dimensions where `on` is False N(0, 1)."""
  if isinstance(p, distributions.StandardNormal):
    return p
  if isinstance(p, distributions.DiagonalGaussian):
    return mask_posterior(p, on)
  if isinstance(p, distributions.MixtureOfDiagonalGaussians):
    return distributions.MixtureOfDiagonalGaussians(
        jnp.where(on[None], p.means, 0.0), jnp.where(on[None], p.log_vars, 0.0),
        p.logits)
  raise TypeError(f'a vectorised sweep cannot pad a {type(p).__name__} prior; '
                  'give its head a masked(p, on) (vaejax.heads)')


# --- Posterior heads. ---


@dataclasses.dataclass(frozen=True)
class PosteriorHead:
  """Base of the posterior heads: the raw encoder output -> q(z|x).

  A subclass defines `blocks` (the output's layout, module docstring) and
  `__call__(model, raw)`, which returns what `encode` returns: a
  distribution of the model protocol (`vaejax.models`) or (mean, log_var).
  `masked` serves the library's Gaussians; override it for another family.
  """

  latent_dim: int

  @property
  def blocks(self):
    raise NotImplementedError

  @property
  def size(self):
    """The encoder's output size."""
    return sum(self.blocks)

  def __call__(self, model, raw):
    raise NotImplementedError

  def masked(self, q, on):
    """q with the dimensions where `on` is False N(0, 1), independent."""
    return mask_posterior(q, on)


class DiagonalHead(PosteriorHead):
  """q = N(mean, diag(exp(log_var))) from [mean; log_var], log_var through
  `bound_log_var`; returned as the pair (mean, log_var)."""

  @property
  def blocks(self):
    return (self.latent_dim, self.latent_dim)

  def __call__(self, model, raw):
    mean, log_var = jnp.split(raw, 2)
    return mean, bound_log_var(log_var)


class FullCovarianceHead(PosteriorHead):
  """q = N(mean, L L^T), a `FullCovarianceGaussian` from [mean; log_var;
  the entries of L below its diagonal, row by row].

  L's diagonal is exp(log_var / 2), log_var through `bound_log_var` (the
  same bounded range as the diagonal posterior, so nothing overflows).
  """

  @property
  def blocks(self):
    k = self.latent_dim
    return (k, k, k * (k - 1) // 2)

  def __call__(self, model, raw):
    k = self.latent_dim
    mean, log_var, lower = jnp.split(raw, [k, 2 * k])
    rows, cols = jnp.tril_indices(k, -1)
    scale_tril = jnp.diag(jnp.exp(0.5 * bound_log_var(log_var)))
    return distributions.FullCovarianceGaussian(mean,
                                                scale_tril.at[rows, cols].set(lower))


class FlowOptions(NamedTuple):
  """The flow posteriors' options: `steps` T (--flow_steps), and for the IAF
  its MADE's `hidden_dims` (--flow_hidden_dims) and the encoder's context
  size `context_dim` (--flow_context_dim)."""
  steps: int = 2
  hidden_dims: tuple = (320, 320)
  context_dim: int = 32


# The IAF's gate bias starts here, so that sigma = sigmoid(s) starts near 1
# (0.73) and each step near the identity, as Kingma et al. (2016, section
# 4) advise ("s_t ... initially sufficiently positive, close to +1 or +2").
IAF_GATE_BIAS = 1.0


@dataclasses.dataclass(frozen=True)
class PlanarHead(PosteriorHead):
  """q = `flows.PlanarFlow`: the diagonal base N(mean, diag(exp(log_var)))
  through T planar maps whose u, w and b the encoder gives too (amortised, as
  Rezende & Mohamed 2015), from [mean; log_var; u_1..u_T; w_1..w_T; b]."""

  steps: int = 2

  @property
  def blocks(self):
    k, steps = self.latent_dim, self.steps
    return (k, k) + (k,) * (2 * steps) + (steps,)

  def __call__(self, model, raw):
    k, steps = self.latent_dim, self.steps
    mean, log_var, maps, b = jnp.split(raw, [k, 2 * k, 2 * k + 2 * k * steps])
    u, w = jnp.split(jnp.reshape(maps, (2 * steps, k)), 2)
    return flows.PlanarFlow(
        distributions.DiagonalGaussian(mean, bound_log_var(log_var)), u, w, b)

  def masked(self, q, on):
    """The base masked, u and w 0 off `on`: the maps leave those dimensions be."""
    return flows.PlanarFlow(mask_posterior(q.base, on), jnp.where(on, q.u, 0.0),
                            jnp.where(on, q.w, 0.0), q.b)


def _planar(model, rngs):
  del rngs
  return PlanarHead(model.latent_dim, model.flow.steps)


class IAFNetwork(nnx.Module):
  """The T steps' MADE parameters of an IAF posterior, stacked over steps
  (`flows.InverseAutoregressiveFlow.network`); kernels lecun-normal, biases
  0 but the gate's, `IAF_GATE_BIAS`."""

  def __init__(self, latent_dim, options, rngs):
    steps, widths = options.steps, list(options.hidden_dims)
    init = nnx.initializers.lecun_normal()

    def kernel(d_in, d_out):
      return nnx.Param(init(rngs.params(), (steps, d_in, d_out)))

    self.kernels = nnx.List([kernel(a, b) for a, b in zip([latent_dim] + widths,
                                                           widths)])
    self.biases = nnx.List([nnx.Param(jnp.zeros((steps, h))) for h in widths])
    if options.context_dim:
      self.context_kernel = kernel(options.context_dim, widths[0])
    # [m | s]: one product gives both (flows.iaf_step).
    self.output_kernel = kernel(widths[-1], 2 * latent_dim)
    self.output_bias = nnx.Param(jnp.concatenate(
        [jnp.zeros((steps, latent_dim)),
         jnp.full((steps, latent_dim), IAF_GATE_BIAS)], axis=-1))

  def arrays(self):
    """The parameters as `flows.InverseAutoregressiveFlow.network`."""
    network = {'kernels': [k[...] for k in self.kernels],
               'biases': [b[...] for b in self.biases]}
    for name in ('context_kernel', 'output_kernel', 'output_bias'):
      if hasattr(self, name):
        network[name] = getattr(self, name)[...]
    return network


@dataclasses.dataclass(frozen=True)
class IAFHead(PosteriorHead):
  """q = `flows.InverseAutoregressiveFlow`: the diagonal base and the context
  h from the encoder, [mean; log_var; h], through T steps of the model's
  `iaf_network` (Kingma et al. 2016). Its MADEs are shaped by the latent
  size, so a vectorised sweep cannot pad it."""

  context_dim: int = 0

  @property
  def blocks(self):
    return (self.latent_dim, self.latent_dim, self.context_dim)

  def __call__(self, model, raw):
    k = self.latent_dim
    mean, log_var, context = jnp.split(raw, [k, 2 * k])
    return flows.InverseAutoregressiveFlow(
        distributions.DiagonalGaussian(mean, bound_log_var(log_var)), context,
        model.iaf_network.arrays())

  def masked(self, q, on):
    raise TypeError('a vectorised sweep cannot pad an IAF posterior (its MADEs '
                    'are shaped by the latent size); train its members one '
                    'after another (--novectorize)')


def _iaf(model, rngs):
  model.iaf_network = IAFNetwork(model.latent_dim, model.flow, rngs)
  return IAFHead(model.latent_dim, model.flow.context_dim)


# --- Prior heads. ---


@dataclasses.dataclass(frozen=True)
class PriorHead:
  """Base of the prior heads: `__call__(model)` -> p(z) over `latent_dim`."""

  latent_dim: int

  def __call__(self, model):
    raise NotImplementedError

  def masked(self, p, on):
    """p with the dimensions where `on` is False N(0, 1), independent."""
    return mask_prior(p, on)


class StandardNormalPrior(PriorHead):
  """p(z) = N(0, I)."""

  def __call__(self, model):
    return distributions.StandardNormal(self.latent_dim)


def _learned_diagonal(model, rngs):
  del rngs  # starts at N(0, I)
  model.prior_mean = nnx.Param(jnp.zeros(model.latent_dim))
  model.prior_log_var = nnx.Param(jnp.zeros(model.latent_dim))
  return LearnedDiagonalPrior(model.latent_dim)


class LearnedDiagonalPrior(PriorHead):
  """A diagonal Gaussian with learned `prior_mean` and `prior_log_var`
  (through `bound_log_var`), starting at N(0, I)."""

  def __call__(self, model):
    return distributions.DiagonalGaussian(model.prior_mean[...],
                                          bound_log_var(model.prior_log_var[...]))


def _vamp(model, rngs):
  mean, std = PSEUDO_INPUT_INIT
  model.pseudo_inputs = nnx.Param(mean + std * jax.random.normal(
      rngs.params(), (model.vamp_components, *model.data_shape)))
  return VampPrior(model.latent_dim)


class VampPrior(PriorHead):
  """The VampPrior (Tomczak & Welling 2018): the uniform mixture of the
  diagonal posteriors at the learned `pseudo_inputs`, which are clipped to
  [0, 1] where the observation head's data are (Bernoulli pixels)."""

  def __call__(self, model):
    pseudo_inputs = model.pseudo_inputs[...]
    if model.observation_head.unit_interval:
      pseudo_inputs = jnp.clip(pseudo_inputs, 0.0, 1.0)
    q = jax.vmap(model.encode)(pseudo_inputs)
    if isinstance(q, distributions.DiagonalGaussian):
      q = q.mean, q.log_var
    if not isinstance(q, tuple):
      raise TypeError(f'the VampPrior mixes diagonal posteriors; the encoder '
                      f'gives a {type(q).__name__}')
    return distributions.MixtureOfDiagonalGaussians.uniform(*q)


# --- Observation heads. ---


@dataclasses.dataclass(frozen=True)
class BernoulliObservation:
  """log p(x|z) Bernoulli with logits the decoder's output; E[x|z] their
  sigmoid; data in [0, 1]."""

  unit_interval = True

  def log_prob(self, model, output, x):
    return likelihoods.bernoulli_log_prob(output, x)

  def mean(self, output):
    return jax.nn.sigmoid(output)

  def output_at(self, mean):
    """The decoder output whose E[x|z] is the data's `mean`: its logit,
    clipped to [0.001, 0.999] first."""
    mean = jnp.clip(mean, 0.001, 0.999)
    return jnp.log(mean) - jnp.log1p(-mean)


def _gaussian(model, rngs, sigmoid_mean=False):
  del rngs
  if model.gaussian_variance == 'learned':
    model.observation_log_var = nnx.Param(jnp.zeros(model.data_shape))
    return GaussianObservation(None, sigmoid_mean)
  return GaussianObservation(math.log(float(model.gaussian_variance)),
                             sigmoid_mean)


@dataclasses.dataclass(frozen=True)
class GaussianObservation:
  """log p(x|z) Gaussian with mean the decoder's output, per pixel; its
  log-variance `fixed_log_var`, or where that is None the learned
  `observation_log_var` (through `bound_log_var`, floored at
  `OBSERVATION_LOG_VAR_MIN`). With `sigmoid_mean` (`--likelihood=
  gaussian_sigmoid`, Kingma & Welling's Frey Face decoder) the mean is the
  output's sigmoid, in (0, 1), for data in [0, 1]."""

  fixed_log_var: float | None
  sigmoid_mean: bool = False

  @property
  def unit_interval(self):
    return self.sigmoid_mean

  def log_prob(self, model, output, x):
    if self.fixed_log_var is None:
      log_var = bound_log_var(model.observation_log_var[...],
                              low=OBSERVATION_LOG_VAR_MIN)
    else:
      log_var = self.fixed_log_var
    return likelihoods.gaussian_log_prob(
        self.mean(output), jnp.asarray(log_var, output.dtype), x)

  def mean(self, output):
    return jax.nn.sigmoid(output) if self.sigmoid_mean else output

  def output_at(self, mean):
    if not self.sigmoid_mean:
      return mean
    return BernoulliObservation().output_at(mean)  # the logit, clipped


POSTERIOR_HEADS = {
    'diagonal': lambda model, rngs: DiagonalHead(model.latent_dim),
    'full_covariance': lambda model, rngs: FullCovarianceHead(model.latent_dim),
    'planar': _planar,
    'iaf': _iaf,
}
PRIOR_HEADS = {
    'standard_normal': lambda model, rngs: StandardNormalPrior(model.latent_dim),
    'learned_diagonal': _learned_diagonal,
    'vamp': _vamp,
}
OBSERVATION_HEADS = {
    'bernoulli': lambda model, rngs: BernoulliObservation(),
    'gaussian': _gaussian,
    'gaussian_sigmoid': lambda model, rngs: _gaussian(model, rngs, sigmoid_mean=True),
}


class Traits(NamedTuple):
  """What the config checks know of a registered head before any model is
  built (`register_posterior_head`, `register_prior_head`).

  Attributes:
    closed_form_kl: KL(q || p) can be in closed form (where the other part
      has one); False: the ELBO estimates it (--noanalytic_kl).
    log_prob: a posterior's q has `log_prob(z)` at any z, as the stl and
      dreg estimators need.
    pads: a vectorised sweep pads it exactly (its `masked`); False: the
      sweep refuses --vectorize.
  """
  closed_form_kl: bool = True
  log_prob: bool = True
  pads: bool = True


POSTERIOR_TRAITS = {'planar': Traits(closed_form_kl=False, log_prob=False),
                    # Its inverse divides by sigma once per coordinate: at
                    # small gates (sigma ~ 0.003) its log q at the flow's
                    # own draws is off by nats, so stl and dreg, which
                    # train through it, are refused.
                    'iaf': Traits(closed_form_kl=False, log_prob=False,
                                  pads=False)}
PRIOR_TRAITS = {'vamp': Traits(closed_form_kl=False)}


def _register(registry, kind, name, factory):
  if name in registry:
    raise ValueError(f'{kind} head {name!r} is already registered')
  registry[name] = factory


def register_posterior_head(name, factory, traits=Traits()):
  """Adds `factory(model, rngs) -> PosteriorHead` as `--posterior=name`,
  with its `Traits`."""
  _register(POSTERIOR_HEADS, 'posterior', name, factory)
  POSTERIOR_TRAITS[name] = traits


def register_prior_head(name, factory, traits=Traits()):
  """Adds `factory(model, rngs) -> PriorHead` as `--prior=name`, with its
  `Traits` (`log_prob` and `pads` are the posterior's)."""
  _register(PRIOR_HEADS, 'prior', name, factory)
  PRIOR_TRAITS[name] = traits


def posterior_traits(name):
  """The `Traits` of `--posterior=name`."""
  return POSTERIOR_TRAITS.get(name, Traits())


def prior_traits(name):
  """The `Traits` of `--prior=name`."""
  return PRIOR_TRAITS.get(name, Traits())


def register_observation_head(name, factory):
  """Adds `factory(model, rngs) -> head` as `--likelihood=name`: a head with
  `log_prob(model, output, x)`, `mean(output)`, `output_at(mean)` and
  `unit_interval` as `BernoulliObservation`."""
  _register(OBSERVATION_HEADS, 'observation', name, factory)


def build(registry, kind, name, model, rngs):
  """The head `name` of `registry` for `model`; unknown names in one line."""
  if name not in registry:
    raise ValueError(f'unknown {kind} {name!r}; known: {tuple(registry)}')
  return registry[name](model, rngs)
