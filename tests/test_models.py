"""vaejax.models: the protocol, the factory, and models with randomness of their own."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
from vaejax import config as config_lib
from vaejax import models
from vaejax import nets
from vaejax import train


class DropoutVAE(nnx.Module):
  """An MLP VAE with dropout in the encoder and the decoder, keys passed in."""

  def __init__(self, data_dim, latent_dim, rate=0.5, *, rngs):
    self.data_shape = (data_dim,)
    self.encoder = nnx.Linear(data_dim, 2 * latent_dim, rngs=rngs)
    self.decoder = nnx.Linear(latent_dim, data_dim, rngs=rngs)
    self.dropout = nnx.Dropout(rate)

  def encode(self, x, *, key):
    x = jnp.reshape(x, -1)
    mean, log_var = jnp.split(self.encoder(self.dropout(x, rngs=key)), 2)
    return mean, log_var

  def log_likelihood(self, x, z, *, key):
    logits = self.decoder(self.dropout(z, rngs=key))
    return vaejax.bernoulli_log_prob(logits, jnp.reshape(x, -1))


def dropout_model_and_data():
  model = DropoutVAE(12, 3, rngs=nnx.Rngs(0))
  x = jax.random.bernoulli(jax.random.key(1), 0.4, (8, 12)).astype(jnp.float32)
  return model, x


def test_the_networks_implement_the_protocol():
  config = config_lib.TrainConfig(workdir='unused')
  for architecture in models.ARCHITECTURES:
    model = models.build_model(
        dataclasses.replace(config, architecture=architecture),
        jax.random.key(0))
    assert isinstance(model, models.Model) and isinstance(model, nets.VAE)
  assert not models.takes_key(model.encode)
  assert models.takes_key(dropout_model_and_data()[0].encode)


def test_a_model_with_dropout_trains_under_jit_and_vmap():
  model, x = dropout_model_and_data()
  graphdef, params = nnx.split(model, nnx.Param)

  @jax.jit
  def loss_and_grads(params, key):
    loss_fn = lambda p: vaejax.negative_elbo(nnx.merge(graphdef, p), x, key,
                                             num_samples=2)[0]
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = loss_and_grads(params, jax.random.key(2))
  again, _ = loss_and_grads(params, jax.random.key(2))
  other, _ = loss_and_grads(params, jax.random.key(3))
  assert np.isfinite(loss) and loss == again and loss != other
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads['encoder']['kernel'][...]).sum()) > 0
  # jit == eager; the IWAE bound takes the same keys.
  eager = vaejax.negative_elbo(model, x, jax.random.key(2), num_samples=2)[0]
  np.testing.assert_allclose(eager, loss, rtol=1e-6)
  bounds = jax.jit(lambda m: vaejax.negative_iwae_bound(
      m, x, jax.random.key(2), num_samples=4)[1])(model)
  assert bounds.shape == (8,) and np.all(np.isfinite(bounds))


def test_the_model_key_leaves_the_draws_of_z_unchanged():
  # With dropout off, the model ignores its keys: the ELBO equals that of the
  # same network without a `key` parameter, draw for draw.
  model, x = dropout_model_and_data()
  model.dropout.rate = 0.0

  class WithoutKeys:
    encode = lambda self, x: model.encode(x, key=jax.random.key(0))
    log_likelihood = lambda self, x, z: model.log_likelihood(
        x, z, key=jax.random.key(0))

  key = jax.random.key(4)
  with_keys = vaejax.negative_elbo(model, x, key, num_samples=3)[1]
  without = vaejax.negative_elbo(WithoutKeys(), x, key, num_samples=3)[1]
  jax.tree.map(np.testing.assert_array_equal, with_keys, without)


def test_dropout_draws_differ_between_examples_and_draws():
  model, x = dropout_model_and_data()
  x = jnp.ones((2, 12))  # the same example twice
  terms = vaejax.negative_elbo(model, x, jax.random.key(5))[1]
  assert terms.elbo[0] != terms.elbo[1]
  log_w = vaejax.log_importance_weights(model, x[0], jax.random.key(6), 64)
  # 64 draws of z and of the decoder's dropout: no two weights alike.
  assert len(np.unique(np.asarray(log_w))) == 64


def test_a_registered_architecture_trains_through_the_trainer(tmp_path,
                                                              monkeypatch):
  def factory(config, rngs):
    return DropoutVAE(64, config.latent_dim, rate=0.1, rngs=rngs)

  monkeypatch.setattr(models, 'ARCHITECTURES', dict(models.ARCHITECTURES))
  models.register_architecture('dropout_mlp', factory)
  with pytest.raises(ValueError, match='already registered'):
    models.register_architecture('dropout_mlp', factory)
  config = config_lib.TrainConfig(
      workdir=str(tmp_path), dataset='linear_gaussian', likelihood='gaussian',
      architecture='dropout_mlp', latent_dim=2, batch_size=100, num_epochs=2,
      eval_iwae_samples=10, progress=False)
  # The Bernoulli decoder of DropoutVAE on real-valued data: the loss is what
  # it is; the point is that the trainer runs a model with keys of its own.
  results = train.train_and_evaluate(config)
  assert np.isfinite(results['test_elbo']) and len(results['kl_per_dim']) == 2
  assert not (tmp_path / 'samples.png').exists()  # no mean_image: no images
