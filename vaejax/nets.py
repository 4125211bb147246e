"""Flax NNX VAEs: an MLP, a convolutional and a linear model, for one example at a time.

The modules hold parameters only (no RNG streams, no losses) and implement the
model protocol (`vaejax.models`), x `[H, W, C]`, from an encoder, a decoder
and the posterior, prior and observation heads named by `posterior`,
`prior` and `likelihood` (`vaejax.heads`, whose registries take new ones):
`encode` gives (mean, log_var) or a `FullCovarianceGaussian`, `prior()`
N(0, I), a learned diagonal Gaussian or the VampPrior, `mean_image(z)`
E[x|z]; besides,
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
from vaejax import heads

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

# The names the built-in heads answer to (`vaejax.heads`, which also holds the
# registries that users extend).
LIKELIHOODS = ('bernoulli', 'gaussian', 'gaussian_sigmoid')
POSTERIORS = ('diagonal', 'full_covariance', 'planar', 'iaf')
# The flows (--flow_steps), and the posteriors a VampPrior cannot mix.
FLOW_POSTERIORS = ('planar', 'iaf')
NON_DIAGONAL_POSTERIORS = ('full_covariance', *FLOW_POSTERIORS)
PRIORS = ('standard_normal', 'learned_diagonal', 'vamp')

bound_log_var = heads.bound_log_var
LOG_VAR_MIN, LOG_VAR_MAX = heads.LOG_VAR_MIN, heads.LOG_VAR_MAX
OBSERVATION_LOG_VAR_MIN = heads.OBSERVATION_LOG_VAR_MIN
PSEUDO_INPUT_INIT = heads.PSEUDO_INPUT_INIT


class VAE(nnx.Module):
  """The protocol's methods from an encoder, a decoder and three heads.

  Subclasses build `encoder`, one example to the posterior head's raw
  output `[posterior_head.size]`, and `decoder`, `[L]` to the data shape.
  The heads come from the registries of `vaejax.heads` by name:
  `likelihood` (observation head: 'bernoulli', or 'gaussian' with the
  observation log-variance a learned per-pixel parameter, independent of z,
  or fixed at log `gaussian_variance`), `prior` (prior head: N(0, I), a
  diagonal Gaussian with learned mean and log-variance starting at N(0, I),
  or the VampPrior of Tomczak & Welling 2018, the uniform mixture of the
  posteriors at `vamp_components` learned pseudo-inputs) and `posterior`
  (posterior head: 'diagonal', 'full_covariance', or the flows 'planar'
  and 'iaf', shaped by `flow`, a `heads.FlowOptions`).
  """

  def __init__(self, data_shape, latent_dim, likelihood, gaussian_variance,
               posterior='diagonal', prior='standard_normal', vamp_components=500,
               rngs=None, flow=heads.FlowOptions()):
    self.data_shape = tuple(data_shape)
    self.latent_dim = latent_dim
    self.likelihood = likelihood
    self.posterior = posterior
    self.prior_kind = prior
    self.gaussian_variance = gaussian_variance
    self.vamp_components = vamp_components
    self.flow = heads.FlowOptions(*flow)
    if prior == 'vamp' and posterior in NON_DIAGONAL_POSTERIORS:
      raise ValueError('the VampPrior is a mixture of diagonal posteriors: it '
                       'needs a diagonal posterior')
    self.observation_head = heads.build(heads.OBSERVATION_HEADS, 'likelihood',
                                        likelihood, self, rngs)
    self.prior_head = heads.build(heads.PRIOR_HEADS, 'prior', prior, self, rngs)
    self.posterior_head = heads.build(heads.POSTERIOR_HEADS, 'posterior',
                                      posterior, self, rngs)

  def encode(self, x):
    return self.posterior_head(self, self.encoder(x))

  def prior(self):
    """p(z), the prior head's."""
    return self.prior_head(self)

  def decode(self, z):
    return self.decoder(z)

  def set_output_bias(self, input_mean):
    """Starts the decoder's output at the data's mean, as Burda et al.'s code.

    The output layer's bias becomes the observation head's output at the
    mean training input `input_mean` (`[H, W, C]`, in [0, 1] for Bernoulli):
    logit(clip(mean, 0.001, 0.999)) for Bernoulli logits, the mean itself for
    the Gaussian. A transposed convolution has a bias per channel: it gets
    the channel's mean over pixels.
    """
    layer = next(m for m in reversed(self.decoder.layers)
                 if isinstance(m, (nnx.Linear, nnx.ConvTranspose)))
    mean = jnp.asarray(input_mean, jnp.float32)
    mean = (mean.reshape(-1) if layer.bias.shape == (mean.size,)
            else mean.reshape(-1, mean.shape[-1]).mean(axis=0))
    layer.bias.set_value(self.observation_head.output_at(mean).astype(layer.bias.dtype))

  def log_likelihood(self, x, z):
    return self.observation_head.log_prob(self, self.decode(z), x)

  def mean_image(self, z):
    """E[x|z]: pixel probabilities (Bernoulli) or the mean (Gaussian)."""
    return self.observation_head.mean(self.decode(z))

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
               flow=heads.FlowOptions(), rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs, flow)
    act = ACTIVATIONS[activation]
    linear = _Layers(kernel_init, rngs).linear
    data_dim = math.prod(self.data_shape)
    self.encoder = nnx.Sequential(
        _flatten, *_mlp_layers([data_dim, *hidden_dims], linear, act),
        linear(hidden_dims[-1], self.posterior_head.size))
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
    return distributions.DiagonalGaussian(mean, heads.bound_log_var(log_var))

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
               flow=heads.FlowOptions(), rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs, flow)
    linear = _Layers(kernel_init, rngs).linear
    data_dim = math.prod(self.data_shape)
    self.encoder = nnx.Sequential(
        _flatten, linear(data_dim, self.posterior_head.size))
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
               flow=heads.FlowOptions(), rngs):
    super().__init__(data_shape, latent_dim, likelihood, gaussian_variance,
                     posterior, prior, vamp_components, rngs, flow)
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
        linear(math.prod(inner_shape), self.posterior_head.size))
    self.decoder = nnx.Sequential(
        linear(latent_dim, math.prod(inner_shape)), act,
        functools.partial(jnp.reshape, shape=inner_shape),
        deconv(c2, c1), act, deconv(c1, in_channels))
