"""Flax NNX VAEs: an MLP and a convolutional model, for one example at a time.

The modules hold parameters only (no RNG streams, no losses) and implement the
model protocol (`vaejax.models`), x `[H, W, C]`: `encode` gives (mean,
log_var) or a `FullCovarianceGaussian`, `prior()` N(0, I), a learned
diagonal Gaussian or the VampPrior, `mean_image(z)` E[x|z]; besides,
`decode(z)` gives the Bernoulli logits or the Gaussian mean `[H, W, C]` and
`sample(key, num)` the decoder means at `num` draws of z ~ p(z).

Batch with `jax.vmap`; `nnx.split(model, nnx.Param)` gives the trainable
arrays. Expressible architectures include the Flax example (784-500-20, ReLU),
Kingma & Welling 2013 (one 500-unit tanh layer) and Burda et al. 2015
(784-200-200-50, tanh).
"""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp

from vaejax import distributions
from vaejax import likelihoods

ACTIVATIONS = {
    'relu': jax.nn.relu,
    'tanh': jnp.tanh,
    'elu': jax.nn.elu,
    'gelu': jax.nn.gelu,
    'softplus': jax.nn.softplus,
    'swish': jax.nn.swish,
    'leaky_relu': jax.nn.leaky_relu,
}

KERNEL_INITS = {
    'lecun_normal': nnx.initializers.lecun_normal(),  # Flax's default
    'glorot_normal': nnx.initializers.glorot_normal(),
    'glorot_uniform': nnx.initializers.glorot_uniform(),
    'he_normal': nnx.initializers.he_normal(),
    'normal': nnx.initializers.normal(0.01),  # N(0, 0.01^2), Kingma & Welling
}
# The `kernel_init` choices: KERNEL_INITS, whose biases start at zero, and
# PyTorch's defaults for nn.Linear, nn.Conv2d and nn.ConvTranspose2d, weights
# and biases uniform on +-1/sqrt(fan_in) (pythae's networks start there).
PYTORCH_DEFAULT = 'pytorch_default'
INITS = (*KERNEL_INITS, PYTORCH_DEFAULT)

LIKELIHOODS = ('bernoulli', 'gaussian')
POSTERIORS = ('diagonal', 'full_covariance')
PRIORS = ('standard_normal', 'learned_diagonal', 'vamp')

# VampPrior pseudo-inputs: free parameters initialised N(0.05, 0.01^2), seen
# through clip(u, 0, 1) where the data are pixels in [0, 1] (Tomczak &
# Welling's hardtanh), as the reference code's MNIST loaders set them
# (utils/load_data.py; its command-line default mean, -0.05, which they
# override, would start every pixel below the clip, where no gradient passes).
PSEUDO_INPUT_INIT = (0.05, 0.01)


def encoder_size(latent_dim, posterior):
  """The encoder's output size: mean and log-variance, plus for a full
  covariance the L (L - 1) / 2 entries below the Cholesky factor's diagonal."""
  extra = latent_dim * (latent_dim - 1) // 2 if posterior == 'full_covariance' else 0
  return 2 * latent_dim + extra


def full_covariance_posterior(raw, latent_dim):
  """`FullCovarianceGaussian` from an encoder output `[encoder_size]`.

  The factor's diagonal is exp(log_var / 2), log_var through `bound_log_var`
  (the same bounded range as the diagonal posterior, so nothing overflows);
  the entries below it are the outputs themselves, row by row.
  """
  mean, log_var, lower = jnp.split(raw, [latent_dim, 2 * latent_dim])
  rows, cols = jnp.tril_indices(latent_dim, -1)
  scale_tril = jnp.diag(jnp.exp(0.5 * bound_log_var(log_var)))
  return distributions.FullCovarianceGaussian(mean, scale_tril.at[rows, cols].set(lower))

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


class VAE(nnx.Module):
  """Shared posterior, prior, likelihood and protocol; subclasses build
  `encoder` and `decoder`.

  `encoder` maps one example to `[encoder_size(L, posterior)]` (mean, then
  log-variance, then for a full covariance the factor's entries below the
  diagonal); `decoder` maps `[L]` to the data shape. For the Gaussian
  likelihood the observation log-variance is a learned per-pixel parameter
  (independent of z) or fixed. The prior is N(0, I), a diagonal Gaussian
  with learned mean and log-variance (starting at N(0, I)), or the VampPrior
  (Tomczak & Welling 2018): the uniform mixture of the posteriors at
  `vamp_components` learned pseudo-inputs.
  """

  def __init__(self, data_shape, latent_dim, likelihood, gaussian_variance,
               posterior='diagonal', prior='standard_normal', vamp_components=500,
               rngs=None):
    if likelihood not in LIKELIHOODS:
      raise ValueError(f'unknown likelihood {likelihood!r}; known: {LIKELIHOODS}')
    if posterior not in POSTERIORS or prior not in PRIORS:
      raise ValueError(f'posterior {posterior!r} / prior {prior!r}: known are '
                       f'{POSTERIORS} / {PRIORS}')
    if prior == 'vamp' and posterior != 'diagonal':
      raise ValueError('the VampPrior is a mixture of diagonal posteriors: it '
                       'needs posterior="diagonal"')
    self.data_shape = tuple(data_shape)
    self.latent_dim = latent_dim
    self.likelihood = likelihood
    self.posterior = posterior
    self.prior_kind = prior
    if likelihood == 'gaussian' and gaussian_variance == 'learned':
      self.observation_log_var = nnx.Param(jnp.zeros(self.data_shape))
    elif likelihood == 'gaussian':
      self.observation_log_var = math.log(float(gaussian_variance))
    if prior == 'learned_diagonal':
      self.prior_mean = nnx.Param(jnp.zeros(latent_dim))
      self.prior_log_var = nnx.Param(jnp.zeros(latent_dim))
    elif prior == 'vamp':
      mean, std = PSEUDO_INPUT_INIT
      self.pseudo_inputs = nnx.Param(mean + std * jax.random.normal(
          rngs.params(), (vamp_components, *self.data_shape)))

  def encode(self, x):
    raw = self.encoder(x)
    if self.posterior == 'full_covariance':
      return full_covariance_posterior(raw, self.latent_dim)
    mean, log_var = jnp.split(raw, 2)
    return mean, bound_log_var(log_var)

  def prior(self):
    """p(z), the prior of `prior_kind`."""
    if self.prior_kind == 'learned_diagonal':
      return distributions.DiagonalGaussian(self.prior_mean[...],
                                            bound_log_var(self.prior_log_var[...]))
    if self.prior_kind == 'vamp':
      pseudo_inputs = self.pseudo_inputs[...]
      if self.likelihood == 'bernoulli':  # pixels in [0, 1]
        pseudo_inputs = jnp.clip(pseudo_inputs, 0.0, 1.0)
      means, log_vars = jax.vmap(self.encode)(pseudo_inputs)
      return distributions.MixtureOfDiagonalGaussians.uniform(means, log_vars)
    return distributions.StandardNormal(self.latent_dim)

  def decode(self, z):
    return self.decoder(z)

  def set_output_bias(self, input_mean):
    """Starts the decoder's output at the data's mean, as Burda et al.'s code.

    The output layer's bias becomes the likelihood's parameter at the mean
    training input `input_mean` (`[H, W, C]`, in [0, 1] for Bernoulli):
    logit(clip(mean, 0.001, 0.999)) for Bernoulli logits, the mean itself for
    the Gaussian. A transposed convolution has a bias per channel: it gets
    the channel's mean over pixels.
    """
    layer = next(m for m in reversed(self.decoder.layers)
                 if isinstance(m, (nnx.Linear, nnx.ConvTranspose)))
    mean = jnp.asarray(input_mean, jnp.float32)
    mean = (mean.reshape(-1) if layer.bias.shape == (mean.size,)
            else mean.reshape(-1, mean.shape[-1]).mean(axis=0))
    if self.likelihood == 'bernoulli':
      mean = jnp.clip(mean, 0.001, 0.999)
      mean = jnp.log(mean) - jnp.log1p(-mean)  # the logit
    layer.bias.set_value(mean.astype(layer.bias.dtype))

  def log_likelihood(self, x, z):
    output = self.decode(z)
    if self.likelihood == 'bernoulli':
      return likelihoods.bernoulli_log_prob(output, x)
    log_var = self.observation_log_var
    if isinstance(log_var, nnx.Variable):  # learned: bounded below
      log_var = bound_log_var(log_var[...], low=OBSERVATION_LOG_VAR_MIN)
    return likelihoods.gaussian_log_prob(output, jnp.asarray(log_var, output.dtype), x)

  def mean_image(self, z):
    """E[x|z]: pixel probabilities (Bernoulli) or the mean (Gaussian)."""
    output = self.decode(z)
    return jax.nn.sigmoid(output) if self.likelihood == 'bernoulli' else output

  def sample(self, key, num):
    """Decoder means at `num` draws from the prior, `[num, H, W, C]`."""
    from vaejax import models  # pylint: disable=g-import-not-at-top  (models builds nets)
    return jax.vmap(self.mean_image)(
        models.adapt(self).prior_draws(key, num, self.latent_dim))


def _flatten(x):
  return jnp.reshape(x, (-1,))


def _uniform(bound):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class _Layers:
  """Makes the networks' layers, initialised as `kernel_init` (one of `INITS`).

  For `PYTORCH_DEFAULT`, fan_in is counted as PyTorch counts it: inputs of a
  linear layer, in channels x kernel area of a convolution, and out channels
  x kernel area of a transposed one (its weight is stored in x out there).
  """

  def __init__(self, kernel_init, rngs):
    self.kernel_init, self.rngs = kernel_init, rngs

  def _inits(self, fan_in):
    if self.kernel_init == PYTORCH_DEFAULT:
      init = _uniform(1.0 / math.sqrt(fan_in))
      return dict(kernel_init=init, bias_init=init)
    return dict(kernel_init=KERNEL_INITS[self.kernel_init])

  def linear(self, d_in, d_out):
    return nnx.Linear(d_in, d_out, rngs=self.rngs, **self._inits(d_in))

  def conv(self, c_in, c_out):
    return nnx.Conv(c_in, c_out, kernel_size=(3, 3), strides=2, rngs=self.rngs,
                    **self._inits(9 * c_in))

  def deconv(self, c_in, c_out):
    return nnx.ConvTranspose(c_in, c_out, kernel_size=(3, 3), strides=2,
                             rngs=self.rngs, **self._inits(9 * c_out))


class MLPVAE(VAE):
  """Fully connected encoder and decoder; the decoder mirrors `hidden_dims`.

  Encoder: flatten -> [Linear(h) -> act] for h in hidden_dims -> Linear(2 L).
  Decoder: [Linear(h) -> act] for h in reversed(hidden_dims) -> Linear(D).
  """

  def __init__(self, data_shape, latent_dim, *, hidden_dims=(500,),
               activation='relu', kernel_init='lecun_normal',
               likelihood='bernoulli', gaussian_variance='learned',
               posterior='diagonal', prior='standard_normal', vamp_components=500,
               rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs)
    act = ACTIVATIONS[activation]
    linear = _Layers(kernel_init, rngs).linear
    data_dim = math.prod(self.data_shape)
    self.encoder = nnx.Sequential(
        _flatten, *_mlp_layers([data_dim, *hidden_dims], linear, act),
        linear(hidden_dims[-1], encoder_size(latent_dim, posterior)))
    self.decoder = nnx.Sequential(
        *_mlp_layers([latent_dim, *reversed(hidden_dims)], linear, act),
        linear(hidden_dims[0], data_dim),
        functools.partial(jnp.reshape, shape=self.data_shape))


def _mlp_layers(widths, linear, act):
  """[Linear(w_i, w_{i+1}), act] for consecutive widths."""
  layers = []
  for d_in, d_out in zip(widths, widths[1:]):
    layers += [linear(d_in, d_out), act]
  return layers


class TwoLayerMLPVAE(MLPVAE):
  """Two stochastic layers, z_2 -> z_1 -> x (Burda et al. 2015, section 5).

  Generative: p(z_2) = N(0, I), p(z_1|z_2) a diagonal Gaussian from an MLP
  (z_2 -> `top_hidden_dims` reversed -> mean and log-variance of z_1),
  p(x|z_1) the one-layer model's decoder. Inference: q(z_1|x) the one-layer
  encoder, q(z_2|z_1) a diagonal Gaussian from an MLP (z_1 ->
  `top_hidden_dims` -> mean and log-variance of z_2). Log-variances are
  bounded as the encoder's (`bound_log_var`). The model implements the
  layered protocol of `vaejax.models` (`latent_layers = 2`).
  """

  latent_layers = 2

  def __init__(self, data_shape, latent_dim, *, top_latent_dim,
               top_hidden_dims=(100, 100), hidden_dims=(500,), activation='relu',
               kernel_init='lecun_normal', likelihood='bernoulli',
               gaussian_variance='learned', rngs):
    super().__init__(data_shape, latent_dim, hidden_dims=hidden_dims,
                     activation=activation, kernel_init=kernel_init,
                     likelihood=likelihood, gaussian_variance=gaussian_variance,
                     rngs=rngs)
    act = ACTIVATIONS[activation]
    linear = _Layers(kernel_init, rngs).linear
    self.top_latent_dim = top_latent_dim
    self.top_encoder = nnx.Sequential(
        *_mlp_layers([latent_dim, *top_hidden_dims], linear, act),
        linear(top_hidden_dims[-1], 2 * top_latent_dim))
    self.top_decoder = nnx.Sequential(
        *_mlp_layers([top_latent_dim, *reversed(top_hidden_dims)], linear, act),
        linear(top_hidden_dims[0], 2 * latent_dim))

  @staticmethod
  def _diagonal(raw):
    mean, log_var = jnp.split(raw, 2)
    return distributions.DiagonalGaussian(mean, bound_log_var(log_var))

  def encode_layer(self, layer, z1):
    """q(z_2|z_1)."""
    del layer  # the only layer above z_1
    return self._diagonal(self.top_encoder(z1))

  def prior(self):
    """p(z_2) = N(0, I)."""
    return distributions.StandardNormal(self.top_latent_dim)

  def prior_layer(self, layer, z2):
    """p(z_1|z_2)."""
    del layer
    return self._diagonal(self.top_decoder(z2))


class LinearVAE(VAE):
  """Linear encoder and decoder: x -> encoder output and z -> W z + b.

  With `likelihood='gaussian'` it is the linear-Gaussian model class of the
  generated datasets (with a per-pixel noise variance), so on them the
  best ELBO and the true log p(x) are known: the exact posterior mean is
  linear in x, its covariance constant.
  """

  def __init__(self, data_shape, latent_dim, *, kernel_init='lecun_normal',
               likelihood='gaussian', gaussian_variance='learned',
               posterior='diagonal', prior='standard_normal', vamp_components=500,
               rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs)
    linear = _Layers(kernel_init, rngs).linear
    data_dim = math.prod(self.data_shape)
    self.encoder = nnx.Sequential(
        _flatten, linear(data_dim, encoder_size(latent_dim, posterior)))
    self.decoder = nnx.Sequential(
        linear(latent_dim, data_dim),
        functools.partial(jnp.reshape, shape=self.data_shape))


class ConvVAE(VAE):
  """Convolutional encoder and decoder for `[H, W, C]` images, H and W divisible by 4.

  Encoder: Conv(c1, 3x3, stride 2) -> act -> Conv(c2, 3x3, stride 2) -> act ->
  flatten -> Linear(2 L). Decoder: Linear -> act -> reshape to
  `[H/4, W/4, c2]` -> ConvTranspose(c1, stride 2) -> act ->
  ConvTranspose(C, stride 2).
  """

  def __init__(self, data_shape, latent_dim, *, channels=(32, 64),
               activation='relu', kernel_init='lecun_normal',
               likelihood='bernoulli', gaussian_variance='learned',
               posterior='diagonal', prior='standard_normal', vamp_components=500,
               rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs)
    height, width, in_channels = self.data_shape
    if height % 4 or width % 4:
      raise ValueError(f'the conv VAE needs H and W divisible by 4, got {data_shape}')
    act = ACTIVATIONS[activation]
    c1, c2 = channels
    layers = _Layers(kernel_init, rngs)
    conv, deconv, linear = layers.conv, layers.deconv, layers.linear
    inner_shape = (height // 4, width // 4, c2)
    self.encoder = nnx.Sequential(
        conv(in_channels, c1), act, conv(c1, c2), act, _flatten,
        linear(math.prod(inner_shape), encoder_size(latent_dim, posterior)))
    self.decoder = nnx.Sequential(
        linear(latent_dim, math.prod(inner_shape)), act,
        functools.partial(jnp.reshape, shape=inner_shape),
        deconv(c2, c1), act, deconv(c1, in_channels))
