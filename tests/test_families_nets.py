"""The posterior and prior families in the networks and the trainer.

--posterior=full_covariance, --prior=learned_diagonal and --prior=vamp: the
networks produce what the math says, stay finite at extreme outputs, and
every combination trains, evaluates, checkpoints and resumes.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
from vaejax import config as config_lib
from vaejax import data
from vaejax import files
from vaejax import nets
from vaejax import train
import kill  # pylint: disable=g-bad-import-order

LATENT_DIM = 3
SHAPE = (4, 4, 1)


def mlp(**kwargs):
  return nets.MLPVAE(SHAPE, LATENT_DIM, hidden_dims=(8,), activation='tanh',
                     rngs=nnx.Rngs(0), **kwargs)


X = jax.random.bernoulli(jax.random.key(0), 0.4, (6, *SHAPE)).astype(jnp.float32)


def test_full_covariance_encoder_lays_out_the_cholesky_factor():
  model = mlp(posterior='full_covariance')
  assert model.encoder.layers[-1].out_features == 2 * LATENT_DIM + 3
  raw = model.encoder(X[0])
  q = model.encode(X[0])
  assert isinstance(q, vaejax.FullCovarianceGaussian)
  np.testing.assert_array_equal(q.mean, raw[:LATENT_DIM])
  np.testing.assert_allclose(jnp.diagonal(q.scale_tril),
                             jnp.exp(0.5 * raw[LATENT_DIM:2 * LATENT_DIM]), rtol=1e-6)
  # Row by row below the diagonal; nothing above it.
  below = q.scale_tril[jnp.tril_indices(LATENT_DIM, -1)]
  np.testing.assert_array_equal(below, raw[2 * LATENT_DIM:])
  np.testing.assert_array_equal(jnp.triu(q.scale_tril, 1), 0)


@pytest.mark.parametrize('bias', [1e4, -1e4, 1e30, -1e30])
def test_full_covariance_is_finite_at_extreme_outputs(bias):
  # The factor's diagonal comes from the bounded log-variance outputs: driven
  # to +-1e4 and +-1e30, loss and gradients stay finite. (The entries below
  # the diagonal are unbounded, as the mean is.)
  model = mlp(posterior='full_covariance')
  last = model.encoder.layers[-1]
  last.bias[...] = last.bias[...].at[LATENT_DIM:2 * LATENT_DIM].set(bias)
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = lambda p: vaejax.negative_elbo(nnx.merge(graphdef, p), X,
                                           jax.random.key(1))[0]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  diagonal = jnp.diagonal(model.encode(X[0]).scale_tril)
  assert np.all(diagonal <= np.exp(0.5 * (nets.LOG_VAR_MAX + 1)))
  assert np.all(diagonal >= np.exp(0.5 * (nets.LOG_VAR_MIN - 1)))


def test_learned_diagonal_prior_starts_as_the_standard_normal():
  standard, learned = mlp(), mlp(prior='learned_diagonal')
  p = learned.prior()
  assert isinstance(p, vaejax.DiagonalGaussian)
  np.testing.assert_array_equal(p.mean, 0)
  np.testing.assert_array_equal(p.log_var, 0)
  # The same networks (the prior's parameters draw no randomness).
  for analytic_kl in (True, False):
    np.testing.assert_allclose(
        vaejax.negative_elbo(learned, X, jax.random.key(2), analytic_kl=analytic_kl)[0],
        vaejax.negative_elbo(standard, X, jax.random.key(2), analytic_kl=analytic_kl)[0],
        rtol=1e-6)
  # Its parameters get gradients.
  graphdef, params = nnx.split(learned, nnx.Param)
  grads = jax.jit(jax.grad(lambda p: vaejax.negative_elbo(
      nnx.merge(graphdef, p), X, jax.random.key(2))[0]))(params)
  assert float(jnp.abs(grads['prior_mean'][...]).sum()) > 0


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
  model = mlp(prior='vamp', vamp_components=5)
  u = model.pseudo_inputs[...]
  assert u.shape == (5, *SHAPE)
  np.testing.assert_allclose(u.mean(), nets.PSEUDO_INPUT_INIT[0], atol=0.01)
  p = model.prior()
  z = jax.random.normal(jax.random.key(3), (7, LATENT_DIM))
  # 1/K sum_k q(z | u_k), the posteriors at the clipped pseudo-inputs.
  densities = []
  for k in range(5):
    mean, log_var = model.encode(jnp.clip(u[k], 0, 1))
    densities.append(vaejax.DiagonalGaussian(mean, log_var).log_prob(z))
  np.testing.assert_allclose(p.log_prob(z),
                             jax.nn.logsumexp(jnp.stack(densities), axis=0) - np.log(5),
                             rtol=1e-5)
  with pytest.raises(TypeError, match='in closed form, and there is none'):
    vaejax.negative_elbo(model, X, jax.random.key(0))
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.jit(jax.grad(lambda p: vaejax.negative_elbo(
      nnx.merge(graphdef, p), X, jax.random.key(2), analytic_kl=False)[0]))(params)
  assert float(jnp.abs(grads['pseudo_inputs'][...]).sum()) > 0


# (flags, whether the run is also killed and resumed). Resuming is the same
# for every family (the parameters are one pytree to orbax); the learned
# prior's run resumes, with the prior's parameters among the model's.
COMBINATIONS = [
    (dict(prior='vamp', vamp_components=10, analytic_kl=False), False),
    (dict(posterior='full_covariance', prior='learned_diagonal'), False),
    (dict(prior='learned_diagonal'), True),
    (dict(top_latent_dim=3, top_hidden_dims=(8,)), False),
]


def without_timing(record):
  return {k: v for k, v in record.items() if 'second' not in k}


@pytest.mark.parametrize('overrides, resume', COMBINATIONS, ids=[
    '-'.join(f'{k}={v}' for k, v in o.items()) for o, _ in COMBINATIONS])
def test_every_family_trains_evaluates_and_resumes(tmp_path, overrides, resume):
  config = config_lib.TrainConfig(
      workdir=str(tmp_path / 'whole'), dataset='linear_gaussian_correlated',
      likelihood='gaussian', hidden_dims=(16,), latent_dim=6, batch_size=100,
      num_epochs=2, eval_iwae_samples=10, progress=False, **overrides)
  config_lib.validate(config)
  whole = train.train_and_evaluate(config)
  assert np.isfinite(whole['test_elbo']) and np.isfinite(whole['test_nll_iwae'])
  # KL per dimension where the KL is a sum over dimensions, adding up to the
  # test KL (closed form there).
  if config.posterior == 'diagonal' and config.prior != 'vamp' and not config.top_latent_dim:
    np.testing.assert_allclose(sum(whole['kl_per_dim']), whole['test_kl'], rtol=1e-4)
  else:
    assert whole['kl_per_dim'] is None
  if config.top_latent_dim:  # active units and KL of z and of z_2
    per_layer = whole['active_units_per_layer']
    assert len(per_layer) == 2 and per_layer[0] == whole['active_units']
    train500 = whole['active_units_train500_per_layer']
    assert len(train500) == 2 and train500[0] == whole['active_units_train500']
    assert 0 <= per_layer[1] <= config.top_latent_dim
    np.testing.assert_allclose(sum(whole['test_kl_per_layer']), whole['test_kl'],
                               rtol=1e-5)
    for record in files.read_jsonl(tmp_path / 'whole' / 'metrics.jsonl'):
      for split in ('valid', 'test'):
        np.testing.assert_allclose(sum(record[f'{split}_kl_per_layer']),
                                   record[f'{split}_kl'], rtol=1e-5)
  else:
    assert 'active_units_per_layer' not in whole
  if not resume:
    return
  # Killed after the first checkpoint, then resumed: the same run.
  resumed_config = dataclasses.replace(config, workdir=str(tmp_path / 'resumed'))
  with kill.at_checkpoint(after=lambda epoch: True):
    train.train_and_evaluate(resumed_config)
  resumed = train.train_and_evaluate(resumed_config)
  assert without_timing(resumed) == without_timing(whole)
  assert ([without_timing(r) for r in files.read_jsonl(tmp_path / 'resumed' / 'metrics.jsonl')]
          == [without_timing(r) for r in files.read_jsonl(tmp_path / 'whole' / 'metrics.jsonl')])


def test_linear_vae_with_a_full_covariance_holds_the_exact_posterior():
  # On the correlated generated data, set the linear encoder to Bayes' rule
  # (mean A x + c, a constant Cholesky factor) and the decoder to the
  # generating model: every log importance weight is then log p(x).
  generating = data.generating_model('linear_gaussian_correlated')
  latent_dim, data_dim = generating.weight.shape[1], generating.weight.shape[0]
  model = nets.LinearVAE((8, 8, 1), latent_dim, posterior='full_covariance',
                         gaussian_variance=str(float(jnp.exp(generating.log_var))),
                         rngs=nnx.Rngs(0))
  exact = jax.vmap(generating.posterior)(jnp.eye(data_dim))  # x = unit vectors
  constant = generating.posterior(jnp.zeros(data_dim))
  factor = constant.scale_tril
  # The mean is affine in x: column j of A is mean(e_j) - mean(0).
  encoder = model.encoder.layers[-1]
  kernel = jnp.zeros_like(encoder.kernel[...])
  kernel = kernel.at[:, :latent_dim].set(exact.mean - constant.mean[None])
  bias = jnp.concatenate([constant.mean, 2 * jnp.log(jnp.diagonal(factor)),
                          factor[jnp.tril_indices(latent_dim, -1)]])
  encoder.kernel[...], encoder.bias[...] = kernel, bias
  model.decoder.layers[0].kernel[...] = generating.weight.T
  model.decoder.layers[0].bias[...] = generating.bias
  x = data.load('linear_gaussian_correlated').test[:4]
  for i, example in enumerate(x):
    log_weights = vaejax.log_importance_weights(model, example, jax.random.key(i), 8)
    np.testing.assert_allclose(
        log_weights, np.full(8, generating.log_marginal(example.reshape(-1))),
        rtol=1e-4)
