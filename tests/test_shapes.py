"""Public functions check the shapes they promise, at trace time, in one line."""

import jax
import jax.numpy as jnp
import pytest

import vaejax


def raises_one_line(fn, *args, match):
  """`fn(*args)` raises ValueError matching `match`, eagerly and under jit."""
  for call in (fn, jax.jit(fn)):
    with pytest.raises(ValueError, match=match) as error:
      call(*args)
    assert '\n' not in str(error.value)


BATCH = jnp.zeros((32, 20))
VECTOR = jnp.zeros(20)
EYE = jnp.eye(20)


@pytest.mark.parametrize('fn, args', [
    (vaejax.standard_normal_kl, (BATCH, BATCH)),
    (vaejax.standard_normal_kl, (VECTOR, jnp.zeros(19))),
    (vaejax.diag_gaussian_kl, (BATCH, BATCH, BATCH, BATCH)),
    (vaejax.diag_gaussian_kl, (VECTOR, VECTOR, VECTOR, jnp.zeros(21))),
    (vaejax.gaussian_kl_tril, (BATCH, jnp.broadcast_to(EYE, (32, 20, 20)),
                               BATCH, jnp.broadcast_to(EYE, (32, 20, 20)))),
    (vaejax.gaussian_kl_tril, (VECTOR, EYE, VECTOR, jnp.eye(19))),
    (vaejax.gaussian_kl, (VECTOR, EYE[:, :19], VECTOR, EYE)),
])
def test_kl_functions_take_one_example(fn, args):
  raises_one_line(fn, *args, match=r'takes one example: got .*use jax.vmap')


def test_a_batch_of_kls_is_a_vmap():
  # What the error points to gives one KL per example.
  kl = jax.vmap(vaejax.standard_normal_kl)(jnp.ones((32, 20)), BATCH)
  assert kl.shape == (32,) and jnp.allclose(kl, 10.0)


class Model:
  """A linear Bernoulli model whose methods can break the protocol."""

  def __init__(self, short_log_var=False, unsummed=False, batched=False):
    self.short_log_var, self.unsummed, self.batched = (
        short_log_var, unsummed, batched)

  def encode(self, x):
    mean = x[..., :4]
    log_var = jnp.zeros(3) if self.short_log_var else jnp.zeros_like(mean)
    return mean, log_var

  def log_likelihood(self, x, z):
    logits = jnp.full(x.shape, jnp.sum(z))
    if self.unsummed:
      return x * jax.nn.log_sigmoid(logits)  # [784]: not summed
    return vaejax.bernoulli_log_prob(logits, x)


X = jnp.ones(784)
KEY = jax.random.key(0)


@pytest.mark.parametrize('model, match', [
    (Model(unsummed=True), r'model.log_likelihood\(x, z\) returned \[784\] .*'
                           r'expected a scalar'),
    (Model(short_log_var=True), r'model.encode\(x\) returned mean \[4\] and '
                                r'log_var \[3\]'),
])
def test_the_model_protocol_is_checked(model, match):
  for fn in (lambda x: vaejax.elbo(model, x, KEY),
             lambda x: vaejax.iwae_bound(model, x, KEY, 5),
             lambda x: vaejax.negative_elbo(model, x[None], KEY)[0],
             lambda x: vaejax.negative_iwae_bound(model, x[None], KEY,
                                                  num_samples=5)[0]):
    raises_one_line(fn, X, match=match)


def test_a_batch_passed_to_the_one_example_functions_is_refused():
  batch = jnp.ones((8, 784))
  raises_one_line(lambda x: vaejax.elbo(Model(), x, KEY), batch,
                  match=r'returned mean \[8, 4\] .* for x \[8, 784\].*ONE example')
  raises_one_line(lambda x: vaejax.negative_elbo(Model(), x, KEY)[0], X[0],
                  match=r'negative_elbo takes a batch \[B, \.\.\.\]; got \[\]')
  # The batched loss of a correct model is the mean of the per-example ELBOs.
  loss, terms = vaejax.negative_elbo(Model(), batch, KEY)
  assert terms.elbo.shape == (8,) and jnp.isfinite(loss)
