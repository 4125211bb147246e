"""vaejax.nets: architectures, the encode / log_likelihood protocol, parameters only."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

import vaejax
from vaejax import heads
from vaejax import nets

MNIST_SHAPE = (28, 28, 1)


def mlp_param_count(widths):
  """Weights and biases of Linear layers chaining `widths`."""
  return sum(a * b + b for a, b in zip(widths, widths[1:]))


@pytest.mark.parametrize('hidden_dims, latent_dim', [
    ((500,), 20),       # the Flax example, ReLU
    ((500,), 3),        # Kingma & Welling 2013, tanh
    ((200, 200), 50),   # Burda et al. 2015, tanh
])
def test_mlp_architectures_have_the_published_sizes(hidden_dims, latent_dim):
  model = nets.MLPVAE(MNIST_SHAPE, latent_dim, hidden_dims=hidden_dims,
                      activation='tanh', rngs=nnx.Rngs(0))
  _, params = nnx.split(model, nnx.Param)
  count = sum(p.size for p in jax.tree.leaves(params))
  encoder = mlp_param_count([784, *hidden_dims, 2 * latent_dim])
  decoder = mlp_param_count([latent_dim, *reversed(hidden_dims), 784])
  assert count == encoder + decoder


def layers_of(module):
  """Every nnx.Linear / Conv / ConvTranspose in `module`, with its path."""
  kinds = (nnx.Linear, nnx.Conv, nnx.ConvTranspose)
  return [(path, m) for path, m in nnx.iter_graph(module) if isinstance(m, kinds)]


def test_pytorch_default_init_is_uniform_on_one_over_root_fan_in():
  # PyTorch's nn.Linear, nn.Conv2d and nn.ConvTranspose2d: weight and bias
  # U(-b, b), b = 1/sqrt(fan_in); fan_in the inputs, in channels x 3 x 3, and
  # for the transposed convolution out channels x 3 x 3.
  models = [nets.MLPVAE(MNIST_SHAPE, 20, hidden_dims=(500,),
                        kernel_init='pytorch_default', rngs=nnx.Rngs(0)),
            nets.ConvVAE(MNIST_SHAPE, 20, channels=(32, 64),
                         kernel_init='pytorch_default', rngs=nnx.Rngs(0))]
  checked = set()
  for model in models:
    for path, layer in layers_of(model):
      kernel = np.asarray(layer.kernel.get_value())
      if isinstance(layer, nnx.Linear):
        fan_in = kernel.shape[0]
      elif isinstance(layer, nnx.ConvTranspose):
        fan_in = 9 * kernel.shape[-1]
      else:
        fan_in = 9 * kernel.shape[-2]
      bound = 1 / np.sqrt(fan_in)
      for name, values in (('kernel', kernel),
                           ('bias', np.asarray(layer.bias.get_value()))):
        assert np.abs(values).max() <= bound, (path, name)
        if values.size >= 500:  # uniform: std b / sqrt(3), not a narrower draw
          np.testing.assert_allclose(values.std(), bound / np.sqrt(3), rtol=0.1,
                                     err_msg=f'{path} {name}')
      checked.add(type(layer))
  assert checked == {nnx.Linear, nnx.Conv, nnx.ConvTranspose}
  # Every other choice starts the biases at zero.
  lecun = nets.MLPVAE(MNIST_SHAPE, 20, rngs=nnx.Rngs(0))
  assert all(not np.any(layer.bias.get_value()) for _, layer in layers_of(lecun))


@pytest.mark.parametrize('architecture', ['mlp', 'conv'])
@pytest.mark.parametrize('shape', [MNIST_SHAPE, (8, 8, 1)])
def test_shapes_and_protocol(architecture, shape):
  cls = nets.MLPVAE if architecture == 'mlp' else nets.ConvVAE
  model = cls(shape, 5, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=shape), jnp.float32)
  mean, log_var = model.encode(x)
  assert mean.shape == log_var.shape == (5,)
  z = jnp.linspace(-1.0, 1.0, 5)
  logits = model.decode(z)
  assert logits.shape == shape
  np.testing.assert_allclose(model.log_likelihood(x, z),
                             vaejax.bernoulli_log_prob(logits, x), rtol=1e-6)
  samples = model.sample(jax.random.key(0), 6)
  assert samples.shape == (6, *shape)
  assert jnp.all((samples >= 0) & (samples <= 1))


def test_gaussian_likelihood_learned_and_fixed_variance():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 8, 1)), jnp.float32)
  z = jnp.ones(3)
  learned = nets.MLPVAE((8, 8, 1), 3, likelihood='gaussian', rngs=nnx.Rngs(0))
  _, params = nnx.split(learned, nnx.Param)
  assert params['observation_log_var'][...].shape == (8, 8, 1)
  np.testing.assert_allclose(
      learned.log_likelihood(x, z),
      vaejax.gaussian_log_prob(learned.decode(z), jnp.zeros((8, 8, 1)), x),
      rtol=1e-6)
  fixed = nets.MLPVAE((8, 8, 1), 3, likelihood='gaussian',
                      gaussian_variance='0.01', rngs=nnx.Rngs(0))
  _, params = nnx.split(fixed, nnx.Param)
  assert 'observation_log_var' not in params
  np.testing.assert_allclose(
      fixed.log_likelihood(x, z),
      vaejax.gaussian_log_prob(fixed.decode(z), jnp.full((8, 8, 1), np.log(0.01)), x),
      rtol=1e-6)
  np.testing.assert_allclose(fixed.mean_image(z), fixed.decode(z))


@pytest.mark.parametrize('cls', [nets.MLPVAE, nets.ConvVAE])
def test_modules_hold_parameters_only(cls):
  model = cls(MNIST_SHAPE, 4, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  assert not jax.tree.leaves(rest)
  # The split-once pattern: a pure function of params, jit-compiled.
  xs = jnp.zeros((3, *MNIST_SHAPE))

  @jax.jit
  def loss(params, key):
    return vaejax.negative_elbo(nnx.merge(graphdef, params), xs, key)[0]

  grads = jax.grad(loss)(params, jax.random.key(0))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))


def test_same_key_same_initialisation_and_vmap_equals_loop():
  make = functools.partial(nets.MLPVAE, MNIST_SHAPE, 4, hidden_dims=(32,))
  a = nnx.split(make(rngs=nnx.Rngs(params=jax.random.key(3))), nnx.Param)[1]
  b = nnx.split(make(rngs=nnx.Rngs(params=jax.random.key(3))), nnx.Param)[1]
  c = nnx.split(make(rngs=nnx.Rngs(params=jax.random.key(4))), nnx.Param)[1]
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert any(not np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
  model = make(rngs=nnx.Rngs(0))
  xs = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, *MNIST_SHAPE)),
                   jnp.float32)
  keys = jax.random.split(jax.random.key(1), 4)
  batched = jax.vmap(functools.partial(vaejax.elbo, model))(xs, keys)
  for i in range(4):
    one = vaejax.elbo(model, xs[i], keys[i])
    np.testing.assert_allclose(batched.elbo[i], one.elbo, rtol=1e-5)


def test_unknown_likelihood_is_refused():
  with pytest.raises(ValueError, match='unknown likelihood'):
    nets.MLPVAE(MNIST_SHAPE, 2, likelihood='poisson', rngs=nnx.Rngs(0))


def test_log_var_bound_is_the_identity_inside_and_smooth_and_bounded_outside():
  low, high = nets.LOG_VAR_MIN, nets.LOG_VAR_MAX
  inside = jnp.linspace(low, high, 1001)
  np.testing.assert_array_equal(nets.bound_log_var(inside), inside)
  outside = jnp.array([-1e30, -1e4, low - 3.0, high + 3.0, 1e4, 1e30])
  bounded = nets.bound_log_var(outside)
  assert np.all((bounded >= low - 1) & (bounded <= high + 1))
  np.testing.assert_allclose(np.asarray(bounded)[[0, 1, -2, -1]],
                             [low - 1, low - 1, high + 1, high + 1])
  # Slope 1 on both sides of each end, and everywhere defined.
  slope = jax.vmap(jax.grad(nets.bound_log_var))
  ends = jnp.array([low - 1e-3, low + 1e-3, high - 1e-3, high + 1e-3])
  np.testing.assert_allclose(slope(ends), 1.0, atol=1e-5)
  assert np.all(slope(jnp.array([low - 3.0, high + 3.0])) > 0)
  for point in (low - 0.5, 0.0, high + 0.5):
    check_grads(nets.bound_log_var, (jnp.float32(point),), order=2,
                modes=('fwd', 'rev'), eps=1e-2)


@pytest.mark.parametrize('log_var_bias', [1e4, -1e4, 1e30, -1e30])
def test_extreme_encoder_log_variances_give_finite_loss_and_gradients(
    log_var_bias, monkeypatch):
  latent_dim = 3
  model = nets.MLPVAE((8, 8, 1), latent_dim, hidden_dims=(16,), activation='tanh',
                      rngs=nnx.Rngs(0))
  last = model.encoder.layers[-1]
  last.bias[...] = last.bias[...].at[latent_dim:].set(log_var_bias)
  graphdef, params = nnx.split(model, nnx.Param)
  x = jax.random.bernoulli(jax.random.key(0), 0.5, (5, 8, 8, 1)).astype(jnp.float32)

  def loss_and_grads():
    loss_fn = lambda p: vaejax.negative_elbo(nnx.merge(graphdef, p), x,
                                             jax.random.key(1))[0]
    return jax.jit(jax.value_and_grad(loss_fn))(params)  # traced anew each call

  _, log_var = model.encode(x[0])
  assert np.all(np.abs(log_var) < 1e3)
  loss, grads = loss_and_grads()
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Without the bound: exp(log_var) overflows, or -log_var swamps the loss.
  monkeypatch.setattr(heads, 'bound_log_var', lambda raw, **_: raw)
  unbounded, grads = loss_and_grads()
  if log_var_bias > 0:
    assert not (np.isfinite(unbounded) and all(np.all(np.isfinite(g))
                                               for g in jax.tree.leaves(grads)))
  else:
    assert unbounded > 100 * loss


def test_learned_observation_variance_has_a_floor_on_constant_pixels():
  # Pixels that are 0 in every example: a learned variance would shrink for
  # ever and log p(x|z) grow without limit. Adam at 0.1 drives the raw
  # parameter far below the floor; each pixel's log density stays under
  # -1/2 (log 2 pi + floor - 1), with finite loss and gradients.
  model = nets.MLPVAE((4, 4, 1), 2, hidden_dims=(8,), likelihood='gaussian',
                      rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jnp.zeros((16, 4, 4, 1))
  optimizer = optax.adam(0.1)

  @jax.jit
  def step(params, opt_state, key):
    loss_fn = lambda p: vaejax.negative_elbo(nnx.merge(graphdef, p), x, key)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  opt_state = optimizer.init(params)
  for i in range(300):
    params, opt_state, loss, grads = step(params, opt_state, jax.random.key(i))
  raw = params['observation_log_var'][...]
  assert float(raw.max()) < nets.OBSERVATION_LOG_VAR_MIN - 1  # pushed past it
  per_pixel_max = -0.5 * (np.log(2 * np.pi) + nets.OBSERVATION_LOG_VAR_MIN - 1)
  assert np.isfinite(loss) and -loss <= 16 * per_pixel_max
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  model = nnx.merge(graphdef, params)
  z = jnp.zeros(2)
  log_p = model.log_likelihood(x[0], z)
  assert np.isfinite(log_p) and log_p <= 16 * per_pixel_max
  # Inside the range the learned value is used as it is.
  params['observation_log_var'][...] = jnp.full((4, 4, 1), -2.0)
  model = nnx.merge(graphdef, params)
  np.testing.assert_allclose(
      model.log_likelihood(x[0], z),
      vaejax.gaussian_log_prob(model.decode(z), jnp.full((4, 4, 1), -2.0), x[0]),
      rtol=1e-6)
