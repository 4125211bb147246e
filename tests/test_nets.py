"""vaejax.nets: architectures, the encode / log_likelihood protocol, parameters only."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
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
