"""The model boundary as user code meets it (`vaejax.models`).

`ElboTerms` unpacks into its three names; a prior needs only `log_prob`
when the KL is estimated; a posterior without `sample_and_log_prob`, or not
a pytree, is refused in one line; layered models whose layers take keys are
evaluated and sampled; a vectorised sweep pads a model whose `encode`
returns a distribution.
"""

import dataclasses
import functools
import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
from vaejax import config as config_lib
from vaejax import distributions as dist
from vaejax import evaluation
from vaejax import heads
from vaejax import linear_gaussian as lg
from vaejax import models
from vaejax import sweep
from vaejax import train


@pytest.fixture(scope='module')
def model():
  return vaejax.make_linear_gaussian(jax.random.key(0), 6, 3)


@pytest.fixture(scope='module')
def x(model):
  return model.sample(jax.random.key(1), 1)[0]


@pytest.mark.jax_defaults  # as user code runs it
def test_elbo_terms_unpack_into_three_names_and_subtract_field_by_field(model, x):
  terms = vaejax.elbo(model, x, jax.random.key(2), num_samples=3)
  elbo, log_likelihood, kl = terms
  np.testing.assert_allclose(elbo, log_likelihood - kl, rtol=1e-6)
  other = vaejax.elbo(model, x, jax.random.key(3), num_samples=3)
  difference = vaejax.ElboTerms(*(a - b for a, b in zip(terms, other)))
  assert all(jnp.shape(a) == () for a in difference)
  tree_difference = jax.tree.map(jnp.subtract, terms, other)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, tree_difference, difference))
  # The batched loss's per-example terms too, and those of two layers.
  _, batched = vaejax.negative_elbo(model, model.sample(jax.random.key(4), 5),
                                    jax.random.key(5))
  assert [a.shape for a in batched] == [(5,)] * 3
  chain = lg.make_linear_gaussian_chain(jax.random.key(0), 6, (3, 2))
  assert len(vaejax.elbo(chain, x, jax.random.key(2))) == 3


class LogProbOnlyPrior:
  """N(0, I) with nothing but `log_prob`: no dim, no sample, no pytree."""

  def log_prob(self, z):
    return jnp.sum(jax.scipy.stats.norm.logpdf(z), axis=-1)


class WithPrior(vaejax.LinearGaussian):

  def prior(self):
    return LogProbOnlyPrior()


@pytest.mark.jax_defaults
def test_a_prior_of_only_log_prob_serves_the_estimated_kl(model, x):
  with_prior = WithPrior(*model)
  key = jax.random.key(6)
  for analytic_kl in (False, None):  # None: no closed form, so estimated
    got = vaejax.elbo(with_prior, x, key, num_samples=4, analytic_kl=analytic_kl)
    expected = vaejax.elbo(model, x, key, num_samples=4, analytic_kl=False)
    np.testing.assert_allclose(jnp.stack(got), jnp.stack(expected), rtol=1e-5)
  np.testing.assert_allclose(
      vaejax.iwae_bound(with_prior, x, key, 8), vaejax.iwae_bound(model, x, key, 8),
      rtol=1e-5)
  with pytest.raises(TypeError, match='none for q DiagonalGaussian || p '
                     'LogProbOnlyPrior: use analytic_kl=False'):
    vaejax.elbo(with_prior, x, key, analytic_kl=True)
  # Drawing from it needs a sample: one line says so.
  with pytest.raises(TypeError, match='LogProbOnlyPrior without sample'):
    models.adapt(with_prior).prior_draws(key, 4, 3)


@dataclasses.dataclass
class NoiseOnly:
  """A posterior of the old internal protocol: sample_and_noise and log_prob."""
  mean: jax.Array

  def sample_and_noise(self, key, num_samples=None):
    eps = jax.random.normal(key, (num_samples, self.mean.shape[0]))
    return self.mean + eps, eps

  def log_prob(self, z):
    return dist.StandardNormal(self.mean.shape[0]).log_prob(z - self.mean)


class NotAPytree(NoiseOnly):

  def sample_and_log_prob(self, key, num_samples=None):
    z, _ = self.sample_and_noise(key, num_samples)
    return z, self.log_prob(z)


@pytest.mark.parametrize('posterior, message', [
    (NoiseOnly, 'returned a NoiseOnly without sample_and_log_prob'),
    (NotAPytree, 'returned a NotAPytree, which is not a pytree'),
])
def test_a_posterior_missing_what_the_library_calls_is_refused_in_one_line(
    model, x, posterior, message):

  class Encoder(vaejax.LinearGaussian):
    def encode(self, x):
      return posterior(super().encode(x)[0])

  for call in (lambda m: vaejax.elbo(m, x, jax.random.key(0), analytic_kl=False),
               lambda m: vaejax.iwae_bound(m, x, jax.random.key(0), 3)):
    with pytest.raises(TypeError) as error:
      call(Encoder(*model))
    first_line = str(error.value).splitlines()[0]
    assert message in first_line and 'vaejax.models' in first_line


class KeyedChain(lg.LinearGaussianChain):
  """The exact chain, its layers taking keys (which must be keys)."""

  def encode_layer(self, layer, z1, *, key):
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return super().encode_layer(layer, z1)

  def prior_layer(self, layer, z2, *, key):
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return super().prior_layer(layer, z2)


def test_layers_that_take_keys_are_evaluated_and_sampled_as_those_that_do_not():
  plain = lg.make_linear_gaussian_chain(jax.random.key(0), 6, (3, 2))
  keyed = KeyedChain(*plain)
  data = plain.sample(jax.random.key(1), 40)
  final = lambda m: jax.jit(evaluation.make_final_evaluation(
      lambda params: m, batch_size=16, iwae_samples=5, iwae_chunk_size=64))(
          None, data, data[:20], jax.random.key(2), jax.random.key(3))
  got, expected = final(keyed), final(plain)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert np.shape(got['active']) == (2,)  # per layer
  draws = lambda m: models.adapt(m).prior_draws(jax.random.key(4), 7, 3)
  np.testing.assert_array_equal(draws(keyed), draws(plain))
  _, grid = evaluation.manifold_latents(KeyedChain(*lg.make_linear_gaussian_chain(
      jax.random.key(0), 6, (2, 2))), jax.random.key(5), 4)
  assert 'prior draws' in grid


class DistributionEncoder(nnx.Module):
  """The trainer's MLP VAE, its encoder returning a `DiagonalGaussian`."""

  def __init__(self, vae):
    self.vae = vae

  def encode(self, x):
    return dist.DiagonalGaussian(*self.vae.encode(x))

  def prior(self):
    return self.vae.prior()

  def log_likelihood(self, x, z):
    return self.vae.log_likelihood(x, z)


def test_a_padded_member_whose_encoder_returns_a_distribution_is_its_model():
  config = config_lib.TrainConfig(workdir='unused', dataset='linear_gaussian',
                                  likelihood='gaussian', hidden_dims=(8,),
                                  latent_dim=2)
  small_graphdef, small = nnx.split(models.build_model(config, jax.random.key(7)),
                                    nnx.Param)
  big_graphdef, big = nnx.split(models.build_model(
      dataclasses.replace(config, latent_dim=5), jax.random.key(0)), nnx.Param)
  embedded = sweep.embed_latents(small, big, 2, 5)
  mask = (jnp.arange(5) < 2).astype(jnp.float32)
  x = jax.random.normal(jax.random.key(1), (4, *config.spec.image_shape))
  loss = lambda m: vaejax.negative_elbo(m, x, jax.random.key(2), num_samples=3)[0]
  standalone = loss(DistributionEncoder(nnx.merge(small_graphdef, small)))
  padded = loss(sweep.MaskedLatents(
      DistributionEncoder(nnx.merge(big_graphdef, embedded)), mask))
  np.testing.assert_allclose(padded, standalone, rtol=2e-5)
  # The tuple encoder pads to the same.
  np.testing.assert_allclose(
      loss(sweep.MaskedLatents(nnx.merge(big_graphdef, embedded), mask)),
      padded, rtol=1e-6)


def test_no_module_but_the_adapter_inspects_a_model():
  import pathlib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(vaejax.__file__).parent
  for path in sorted(root.rglob('*.py')):
    if path.name == 'models.py':
      continue
    text = path.read_text()
    for pattern in ('hasattr(model', 'getattr(model', 'takes_key(',
                    "'latent_layers', 1"):
      assert pattern not in text, (path.name, pattern)


class SoftplusScaleHead(heads.PosteriorHead):
  """A user's posterior head: q = N(mean, diag(std^2)) with std =
  softplus(raw_k) * softplus(shared), from [mean; raw; shared], blocks
  (k, k, 1) that no head of the library has."""

  @property
  def blocks(self):
    return (self.latent_dim, self.latent_dim, 1)

  def __call__(self, model, raw):
    k = self.latent_dim
    mean, scale, shared = jnp.split(raw, [k, 2 * k])
    std = jax.nn.softplus(scale) * jax.nn.softplus(shared)
    return dist.DiagonalGaussian(mean, 2 * jnp.log(std))


def test_a_registered_posterior_head_trains_alone_and_in_a_vectorised_sweep(
    tmp_path, monkeypatch):
  monkeypatch.setattr(heads, 'POSTERIOR_HEADS', dict(heads.POSTERIOR_HEADS))
  heads.register_posterior_head(
      'softplus', lambda model, rngs: SoftplusScaleHead(model.latent_dim))
  config = functools.partial(
      config_lib.TrainConfig, dataset='linear_gaussian', likelihood='gaussian',
      posterior='softplus', hidden_dims=(8,), batch_size=100, num_epochs=1,
      eval_iwae_samples=4, progress=False)
  model = models.build_model(config(workdir='unused', latent_dim=3),
                             jax.random.key(0))
  assert model.encoder.layers[-1].out_features == 7
  flags = sweep.SweepFlags(latent_dims=(1, 3), seeds=(0,), vectorize=True)
  rows = sweep.run(config(workdir=str(tmp_path / 'sweep')), flags,
                   log=lambda *_: None)
  train.train_and_evaluate(config(workdir=str(tmp_path / 'alone'), latent_dim=3))
  alone = json.loads((tmp_path / 'alone' / 'results.json').read_text())
  assert [r['latent_dim'] for r in rows] == [1, 3]
  for name in ('test_elbo', 'test_log_likelihood', 'test_nll_iwae'):
    np.testing.assert_allclose(rows[1][name], alone[name], rtol=2e-5)


def test_a_registered_heads_traits_are_checked_before_any_model(tmp_path,
                                                                 monkeypatch):
  """A head registered without a closed-form KL needs --noanalytic_kl, one
  without log_prob refuses stl and dreg, one that cannot pad refuses a
  vectorised sweep: each in one line, before any model or file."""
  for name in ('POSTERIOR_HEADS', 'POSTERIOR_TRAITS'):
    monkeypatch.setattr(heads, name, dict(getattr(heads, name)))
  heads.register_posterior_head(
      'opaque', lambda model, rngs: SoftplusScaleHead(model.latent_dim),
      heads.Traits(closed_form_kl=False, log_prob=False, pads=False))
  config = functools.partial(
      config_lib.TrainConfig, workdir=str(tmp_path / 'run'),
      dataset='linear_gaussian', likelihood='gaussian', posterior='opaque')
  with pytest.raises(config_lib.ConfigError,
                     match='--posterior=opaque has no closed-form KL'):
    config_lib.validate(config())
  config_lib.validate(config(analytic_kl=False))
  with pytest.raises(config_lib.ConfigError,
                     match='--posterior=opaque has no usable log_prob'):
    config_lib.validate(config(objective='iwae', gradient_estimator='dreg'))
  with pytest.raises(config_lib.ConfigError,
                     match='--posterior=opaque cannot pad exactly'):
    sweep.run(config(analytic_kl=False),
              sweep.SweepFlags(latent_dims=(1, 3), seeds=(0,), vectorize=True),
              log=lambda *_: None)
  assert not (tmp_path / 'run').exists()
