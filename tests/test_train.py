"""vaejax.train and experiments.train: end to end, resume, IWAE, bad input."""

import dataclasses
import functools
import json
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
from matplotlib import image as mpl_image
import numpy as np
import optax
import pytest

import vaejax
from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import data
from vaejax import evaluation
from vaejax import files
from vaejax import objectives
from vaejax import optim
from vaejax import reevaluate
from vaejax import rng
from vaejax import rundir
from vaejax import step as step_lib
from vaejax import train
import kill  # pylint: disable=g-bad-import-order

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Fields that measure wall time, and so differ between otherwise equal runs.
TIMING_FIELDS = ('epoch_seconds', 'examples_per_second', 'compile_seconds',
                 'train_seconds')


def small_config(workdir, **overrides):
  fields = dict(workdir=str(workdir), dataset='linear_gaussian',
                likelihood='gaussian', hidden_dims=(32,), latent_dim=4,
                batch_size=100, num_epochs=4, eval_iwae_samples=20,
                progress=False)
  fields.update(overrides)
  return config_lib.TrainConfig(**fields)


def without_timing(record):
  return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


def run_binary(*args, timeout=300):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.train', *args], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('architecture', ['mlp', 'conv'])
def test_binary_trains_one_epoch_end_to_end(tmp_path, architecture, capsys):
  flags = dict(workdir=str(tmp_path), dataset='linear_gaussian',
               likelihood='gaussian', architecture=architecture, latent_dim=2,
               num_epochs=1, batch_size=100, eval_iwae_samples=20)
  if architecture == 'mlp':  # the binary
    result = run_binary(*(f'--{k}={v}' for k, v in flags.items()),
                        '--hidden_dims=32')
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = result.stdout
  else:  # the same in this process, one interpreter start fewer
    train.train_and_evaluate(config_lib.TrainConfig(
        progress=False, conv_channels=(4, 8), **flags))
    stdout = capsys.readouterr().out
  assert 'epoch 1/1' in stdout and 'test NLL' in stdout
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert set(saved) == {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  assert saved['architecture'] == architecture
  (record,) = files.read_jsonl(tmp_path / 'metrics.jsonl')
  for key in ('epoch', 'examples_seen', 'train_loss', 'valid_elbo', 'test_elbo',
              'test_log_likelihood', 'test_kl', 'epoch_seconds',
              'examples_per_second'):
    assert np.isfinite(record[key]), key
  assert record['examples_seen'] == 2000
  np.testing.assert_allclose(record['test_elbo'],
                             record['test_log_likelihood'] - record['test_kl'],
                             rtol=1e-5)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['iwae_samples'] == 20 and len(results['kl_per_dim']) == 2
  # The test ELBO's closed-form KL is the sum over dimensions of the mean
  # KL per dimension (values: tests/test_evaluation.py).
  assert min(results['kl_per_dim']) >= 0
  np.testing.assert_allclose(sum(results['kl_per_dim']), results['test_kl'],
                             rtol=1e-4)
  # The importance-weighted bound is tighter than the ELBO.
  assert results['test_nll_iwae'] < -results['test_elbo']
  for name in ('reconstructions.png', 'samples.png', 'manifold.png'):
    assert mpl_image.imread(tmp_path / name).ndim == 3, name
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """(results, metrics lines) of `small_config`'s run, not interrupted."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  results = train.train_and_evaluate(small_config(workdir))
  return results, files.read_jsonl(workdir / 'metrics.jsonl')


@pytest.mark.parametrize('when', ['after checkpoint 2', 'before checkpoint 3',
                                  'every 2 epochs, before checkpoint 4'])
def test_resume_gives_the_results_of_an_uninterrupted_run(tmp_path, when,
                                                          uninterrupted):
  reference, reference_metrics = uninterrupted

  config = small_config(tmp_path / 'resumed')
  # Before checkpoint 3: metrics line 3 is written, its checkpoint not.
  # Every 2 epochs: lines 1 to 4 are written, the checkpoint of epoch 2
  # alone; the run goes back to it and trains epochs 3 and 4 again (with
  # checkpoints every epoch now: the interval is not part of the results).
  if when == 'after checkpoint 2':
    killed = kill.at_checkpoint(after=lambda epoch: epoch == 2)
  else:
    killed = kill.at_checkpoint(before=lambda epoch: epoch == int(when[-1]))
  with killed:
    train.train_and_evaluate(dataclasses.replace(
        config, checkpoint_every=2 if when.startswith('every') else 1))
  checkpoints = lambda: sorted(
      int(p.name) for p in (tmp_path / 'resumed' / 'checkpoints').glob('[0-9]*'))
  assert checkpoints() == ([2] if when.startswith('every') else [1, 2])
  resumed = train.train_and_evaluate(config)
  if when.startswith('every'):
    assert checkpoints() == [2, 3, 4]

  metrics = files.read_jsonl(tmp_path / 'resumed' / 'metrics.jsonl')
  assert [r['epoch'] for r in metrics] == [1, 2, 3, 4]
  assert [without_timing(r) for r in metrics] == [
      without_timing(r) for r in reference_metrics]
  assert without_timing(resumed) == without_timing(reference)
  # A finished run run again returns its results without training.
  assert train.train_and_evaluate(config) == resumed


@pytest.mark.jax_defaults
def test_best_valid_final_model_is_kept_through_a_kill_after_a_later_checkpoint(
    tmp_path):
  # 50 training examples at a high learning rate: the validation ELBO peaks
  # at epoch 3 of 5, then falls for two epochs.
  named = data.load('linear_gaussian')
  path = tmp_path / 'few.npz'
  np.savez(path, train=named.train[:50], valid=named.valid[:100],
           test=named.test[:100])
  config = lambda name, **kw: small_config(
      tmp_path / name, dataset=str(path), batch_size=50, hidden_dims=(64,),
      learning_rate=0.03, num_epochs=5, **kw)
  best = train.train_and_evaluate(config('best', final_model='best_valid'))
  metrics = files.read_jsonl(tmp_path / 'best' / 'metrics.jsonl')
  valid = [r['valid_elbo'] for r in metrics]
  assert 1 + int(np.argmax(valid)) == best['final_epoch'] == 3, valid
  # The final figures are those of the chosen epoch's parameters: its test
  # ELBO is the one its metrics line recorded (not the last epoch's).
  np.testing.assert_allclose(best['test_elbo'], metrics[2]['test_elbo'], rtol=1e-5)
  assert abs(best['test_elbo'] - metrics[-1]['test_elbo']) > 0.1

  # Killed after the checkpoint of epoch 4 (the best is 3), then resumed.
  with kill.at_checkpoint(after=lambda epoch: epoch == 4):
    train.train_and_evaluate(config('resumed', final_model='best_valid'))
  resumed = train.train_and_evaluate(config('resumed', final_model='best_valid'))
  assert without_timing(resumed) == without_timing(best)

  # The re-estimate of the last epoch's parameters in that run is the
  # estimate of a run that keeps the last epoch (same training, same draws).
  last = train.train_and_evaluate(config('last'))
  record = reevaluate.reevaluate(
      tmp_path / 'resumed', params='last', log=lambda _: None,
      iwae_samples=last['iwae_samples'])
  assert record['epoch'] == last['final_epoch'] == 5
  np.testing.assert_allclose(record['test_nll_iwae'], last['test_nll_iwae'], rtol=1e-6)
  assert abs(record['test_nll_iwae'] - best['test_nll_iwae']) > 0.1


def test_active_units_are_counted_on_the_test_set_and_the_first_500_training_examples(
    tmp_path):
  # The first 500 training examples are one image repeated: no unit varies
  # over them, while the test set's vary.
  dataset = data.load('linear_gaussian')
  train_x = np.concatenate([np.repeat(dataset.train[:1], 500, axis=0),
                            dataset.train[500:]])
  np.savez(tmp_path / 'data.npz', train=train_x, valid=dataset.valid,
           test=dataset.test)
  config = small_config(tmp_path / 'run', num_epochs=2,
                        dataset=str(tmp_path / 'data.npz'))
  results = train.train_and_evaluate(config)
  _, _, like = train.initial_state(config, 20)
  checkpointer = checkpoint.Checkpointer(tmp_path / 'run' / 'checkpoints')
  state = checkpointer.restore(2, jax.tree.map(np.asarray, like))
  checkpointer.close()
  graphdef = train.initial_state(config, 20)[0]
  model = nnx.merge(graphdef, state['params'])

  def active(x):  # Var over examples of the posterior mean, in float64
    means = np.asarray(jax.vmap(lambda e: model.encode(e)[0])(x), np.float64)
    return int(np.sum(means.var(axis=0) > evaluation.ACTIVE_UNIT_THRESHOLD))

  assert results['active_units'] == active(dataset.test) > 0
  assert results['active_units_train500'] == active(train_x[:500]) == 0
  assert results['final_epoch'] == 2


def test_reevaluation_gives_the_runs_figure_again_then_draws_anew(tmp_path):
  config = small_config(tmp_path / 'run', num_epochs=2, final_model='best_valid')
  results = train.train_and_evaluate(config)
  record = reevaluate.reevaluate(tmp_path / 'run', repeats=3, log=lambda _: None,
                                 iwae_samples=config.eval_iwae_samples)
  per_repeat = record['test_nll_iwae_per_repeat']
  # Repeat 0 is the run's own estimate (same parameters, K and draws).
  np.testing.assert_allclose(per_repeat[0], results['test_nll_iwae'], rtol=1e-6)
  assert len(set(per_repeat)) == 3 and record['epoch'] == results['final_epoch']
  np.testing.assert_allclose(record['test_nll_iwae'], np.mean(per_repeat), rtol=1e-6)
  assert files.read_jsonl(tmp_path / 'run' / 'evaluations.jsonl') == [record]
  with pytest.raises(config_lib.ConfigError, match='holds no finished run'):
    reevaluate.reevaluate(tmp_path / 'other', iwae_samples=5)


def test_a_npz_file_of_the_same_arrays_trains_as_the_named_dataset(tmp_path):
  # The user's-data path reads, converts and trains exactly like a named
  # dataset; only the known log p(x) of the generated data is missing.
  named = data.load('linear_gaussian')
  path = tmp_path / 'arrays.npz'
  np.savez(path, train=named.train, valid=named.valid, test=named.test)
  results = {}
  for name, dataset in (('named', 'linear_gaussian'), ('file', str(path))):
    config = small_config(tmp_path / name, num_epochs=2, dataset=dataset)
    results[name] = without_timing(train.train_and_evaluate(config))
    results[name]['metrics'] = [without_timing(r) for r in files.read_jsonl(
        tmp_path / name / 'metrics.jsonl')]
  assert 'test_nll_true' in results['named']
  assert {k: v for k, v in results['named'].items() if 'true' not in k} == results['file']


@pytest.mark.parametrize('architecture', ['mlp', 'linear', 'conv'])
@pytest.mark.parametrize('likelihood', ['bernoulli', 'gaussian'])
def test_data_mean_output_bias_starts_the_decoder_at_the_data(
    tmp_path, architecture, likelihood):
  # Pixel probabilities from 0 to 1 (both clipped ends included), 8x8.
  rng_np = np.random.default_rng(0)
  probs = np.linspace(0.0, 1.0, 64).reshape(8, 8, 1)
  x = (rng_np.random((600, 8, 8, 1)) < probs).astype(np.float32)
  if likelihood == 'gaussian':
    x = x * 0.5 + 0.25  # real values: not binary pixels
  path = tmp_path / 'pixels.npz'
  np.savez(path, train=x[:400], valid=x[400:500], test=x[500:])
  config = small_config(tmp_path / 'run', dataset=str(path), likelihood=likelihood,
                        architecture=architecture, output_bias='data_mean',
                        hidden_dims=(32,) if architecture == 'mlp' else (500,),
                        conv_channels=(4, 8) if architecture == 'conv' else (32, 64))
  graphdef, _, state = train.initial_state(config, 1, x[:400])
  model = nnx.merge(graphdef, state['params'])
  mean = x[:400].mean(axis=0)
  expected = np.clip(mean, 0.001, 0.999) if likelihood == 'bernoulli' else mean
  if architecture == 'conv':  # one bias per channel: the mean over pixels
    expected = np.full_like(expected, expected.mean())
  # With the output layer's weights at zero, the model's mean output is the
  # data's mean (clipped for Bernoulli) whatever z.
  output = [m for m in model.decoder.layers
            if isinstance(m, (nnx.Linear, nnx.ConvTranspose))][-1]
  output.kernel.set_value(jnp.zeros_like(output.kernel.get_value()))
  z = jax.random.normal(jax.random.key(1), (3, config.latent_dim))
  np.testing.assert_allclose(jax.vmap(model.mean_image)(z),
                             np.broadcast_to(expected, (3, 8, 8, 1)), rtol=1e-5,
                             atol=1e-6)
  # The default starts every Bernoulli pixel at 1/2, a Gaussian one at 0.
  zero = small_config(tmp_path / 'zero', dataset=str(path), likelihood=likelihood,
                      architecture='linear')
  bias = train.initial_state(zero, 1)[2]['params']['decoder']['layers'][0]['bias']
  assert not np.any(bias.get_value())


def exact_model():
  return vaejax.make_linear_gaussian(jax.random.key(0), 6, 2)


class Shifted:
  """A model whose encoder is off the exact posterior."""

  def __init__(self, model):
    self.model = model

  def encode(self, x):
    mean, log_var = self.model.encode(x)
    return mean + 0.3, log_var - 0.5

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z)


@pytest.mark.parametrize('num_samples, chunk_size', [(50, 16), (50, 50), (7, 1000)])
def test_chunked_iwae_estimates_the_bound_of_k_draws(num_samples, chunk_size):
  # However K is chunked, each example's estimate is a draw of L_K: over 400
  # examples its mean equals that of vaejax.iwae_bound with all K draws at
  # once on independent keys (paired differences, five standard errors).
  # Counting a padded draw, dropping a chunk or a wrong log K would shift it.
  model = exact_model()
  x = model.sample(jax.random.key(1), 400)
  iwae = jax.jit(evaluation.make_iwae(Shifted, num_samples, chunk_size))
  got = np.asarray(iwae(model, x, jax.random.key(2)), np.float64)
  reference = np.asarray(jax.vmap(
      lambda x, k: vaejax.iwae_bound(Shifted(model), x, k, num_samples))(
          x, jax.random.split(jax.random.key(3), len(x))), np.float64)
  diff = got - reference
  assert abs(diff.mean()) < 5 * diff.std() / np.sqrt(len(diff)), diff.mean()
  # L_K lies between the ELBO's mean and log p(x): a bound, tighter than K=1.
  elbo = np.asarray(jax.vmap(lambda x, k: vaejax.elbo(
      Shifted(model), x, k, analytic_kl=False).elbo)(
          x, jax.random.split(jax.random.key(4), len(x))))
  log_marginal = np.asarray(jax.vmap(model.log_marginal)(x))
  assert elbo.mean() < got.mean() < log_marginal.mean()
  # With the exact posterior every chunking gives log p(x) exactly.
  exact = jax.jit(evaluation.make_iwae(lambda p: p, num_samples, chunk_size))
  np.testing.assert_allclose(exact(model, x[:5], jax.random.key(2)),
                             log_marginal[:5], rtol=1e-5)


@pytest.mark.parametrize('chunk_size', [1, 3, 4])
def test_the_iwae_chunk_size_changes_no_draw(chunk_size):
  # iwae_chunk_size bounds memory only: each example's K = 8 draws are the
  # same however they are chunked, so every bound equals the unchunked one to
  # float32 rounding (a chunk drawing from keys of its own is off by nats).
  params = exact_model()
  x = params.sample(jax.random.key(1), 5)
  whole, chunked = (jax.jit(evaluation.make_iwae(Shifted, 8, size))(
      params, x, jax.random.key(2)) for size in (1 << 16, chunk_size))
  np.testing.assert_allclose(chunked, whole, rtol=1e-5)
  # And the unchunked figures are vaejax.iwae_bound on each example's key.
  np.testing.assert_allclose(whole, jax.vmap(
      lambda x, k: vaejax.iwae_bound(Shifted(params), x, k, 8))(
          x, jax.vmap(functools.partial(jax.random.fold_in, jax.random.key(2)))(
              jnp.arange(5))), rtol=1e-6)
  with pytest.raises(ValueError, match='chunk_size is 0; expected None or an int'):
    vaejax.iwae_bound(Shifted(params), x[0], jax.random.key(2), 8, chunk_size=0)


@pytest.mark.parametrize('num_examples, chunk_size, chunk', [
    (7, 3, 3), (200, 65, 50), (20, 1310, 20), (10, 10, 10)])
def test_map_over_examples_pads_and_drops(num_examples, chunk_size, chunk):
  x = jnp.arange(float(num_examples))
  shapes = []

  def fn(i):
    shapes.append(i.shape)
    return x[i] * 2, i

  out = jax.jit(lambda: evaluation.map_over_examples(fn, num_examples, chunk_size))()
  np.testing.assert_array_equal(out[0], x * 2)
  np.testing.assert_array_equal(out[1], np.arange(num_examples))
  # Equal chunks of at most chunk_size: little padding, none when it fits.
  assert shapes == [(chunk,)]


def test_dynamic_binarization_draws_bernoulli_pixels():
  grey = jnp.asarray(np.linspace(0, 255, 256).astype(np.uint8).repeat(400))
  draws = jnp.stack([
      data.to_inputs(grey, jax.random.key(seed), pixels='grey',
                       dynamic_binarization=True)
      for seed in range(20)])
  assert set(np.unique(draws)) <= {0.0, 1.0}
  # Per grey level, 8,000 draws: the frequency of ones is x / 255 within 5
  # standard errors.
  freq = draws.reshape(20, 256, 400).mean(axis=(0, 2))
  p = np.linspace(0, 255, 256).astype(np.uint8) / 255.0
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / 8000) + 1e-9)
  # A new key is a new binarization; the same key the same one.
  a, b, c = (data.to_inputs(grey, jax.random.key(s), pixels='grey',
                             dynamic_binarization=True) for s in (0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_allclose(data.to_inputs(grey, None, pixels='grey',
                                            dynamic_binarization=False), p.repeat(400))


def test_kl_warmup_is_linear_then_constant(tmp_path):
  config = small_config(tmp_path, beta=2.0, kl_warmup_epochs=2.0)
  weights = [float(optim.kl_weight(config, step, 10)) for step in (0, 9, 19, 50)]
  np.testing.assert_allclose(weights, [2.0 / 20, 2.0 * 10 / 20, 2.0, 2.0])
  assert float(optim.kl_weight(small_config(tmp_path), 0, 10)) == 1.0


@pytest.mark.parametrize('objective, num_samples', [('elbo', 3), ('iwae', 3),
                                                     ('half_kl', 2)])
def test_train_step_takes_the_gradient_of_the_configured_objective(
    tmp_path, objective, num_samples, monkeypatch):
  # half_kl: an objective of the user's, registered.
  monkeypatch.setattr(objectives, 'OBJECTIVES', dict(objectives.OBJECTIVES))
  objectives.register_objective('half_kl', lambda config, steps: objectives.elbo_loss(
      num_samples=config.num_samples, beta=0.5, analytic_kl=False))
  with pytest.raises(ValueError, match='already registered'):
    objectives.register_objective('half_kl', objectives.elbo_loss)
  config = small_config(tmp_path, objective=objective, num_samples=num_samples,
                        optimizer='adagrad', analytic_kl=False)
  if objective == 'half_kl':  # accepted by the flags once registered
    config_lib.validate(config)
  graphdef, optimizer, state = train.initial_state(config, 10)
  model_fn = functools.partial(nnx.merge, graphdef)
  x = data.load('linear_gaussian').train[:100]
  run_key, step = jax.random.key(5), 3

  def loss_fn(params):
    model, key = model_fn(params), jax.random.fold_in(run_key, step)
    if objective == 'iwae':
      return vaejax.negative_iwae_bound(model, x, key, num_samples=num_samples)[0]
    return vaejax.negative_elbo(model, x, key, num_samples=num_samples,
                                beta=0.5 if objective == 'half_kl' else 1.0,
                                analytic_kl=False)[0]

  train_step = jax.jit(step_lib.make_train_step(
      model_fn, optimizer, objectives.from_config(config, 10)))
  params, _, stats = train_step(state['params'], state['opt_state'], x,
                                run_key, step)
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(state['params'])
  updates, _ = optax.adagrad(config.learning_rate).update(
      grads, state['opt_state'], state['params'])
  np.testing.assert_allclose(stats['loss'], loss, rtol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-7),
               params, optax.apply_updates(state['params'], updates))


def test_weight_decay_is_the_gradient_of_an_l2_penalty(tmp_path):
  decayed = small_config(tmp_path, optimizer='adagrad', weight_decay=0.3)
  plain = dataclasses.replace(decayed, weight_decay=0.0)
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  grads = {'w': jnp.array([0.1, 0.2, -0.3])}
  penalty_grads = jax.grad(
      lambda p: 0.3 / 2 * jnp.sum(jnp.square(p['w'])))(params)
  with_decay = optim.build_optimizer(decayed, 10)
  without = optim.build_optimizer(plain, 10)
  got, _ = with_decay.update(grads, with_decay.init(params), params)
  want, _ = without.update(jax.tree.map(jnp.add, grads, penalty_grads),
                           without.init(params), params)
  np.testing.assert_allclose(got['w'], want['w'], rtol=1e-6)


@pytest.mark.parametrize('weight_decay, expected', [(None, 1e-4), (0.0, 0.0),
                                                    (0.3, 0.3)])
def test_adamw_decays_by_its_default_unless_told(tmp_path, weight_decay,
                                                 expected):
  # Decoupled: the update is Adam's minus learning_rate * decay * params.
  config = small_config(tmp_path, optimizer='adamw', weight_decay=weight_decay)
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  grads = {'w': jnp.array([0.1, 0.2, -0.3])}
  adamw = optim.build_optimizer(config, 10)
  adam = optim.build_optimizer(
      dataclasses.replace(config, optimizer='adam', weight_decay=0.0), 10)
  got, _ = adamw.update(grads, adamw.init(params), params)
  want, _ = adam.update(grads, adam.init(params), params)
  np.testing.assert_allclose(
      got['w'], want['w'] - config.learning_rate * expected * params['w'],
      rtol=1e-6)


def test_iwae_code_adam_moves_the_parameters_as_burda_et_als_code(tmp_path):
  # The Theano update of yburda/iwae's optimizers.py, written out in NumPy:
  # the gradient of the batch's summed bound (objective, ascended), m from 0,
  # v from 1, the timestep from 1, and the parameters moved with the moments
  # of before the step (Theano's updates are simultaneous).
  batch_size, learning_rate, b1, b2, eps = 20, 1e-3, 0.99, 0.999, 1e-4
  config = small_config(tmp_path, batch_size=batch_size, learning_rate=learning_rate,
                        adam_b1=b1, adam_b2=b2, adam_eps=eps,
                        adam_variant='iwae_code')
  rng = np.random.default_rng(0)
  loss_grads = rng.normal(size=(6, 3)) * [[1e-3, 1.0, 30.0]]  # of the batch mean
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  optimizer = optim.build_optimizer(config, 10)
  state = optimizer.init(params)
  want, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.ones(3)
  for timestep, grad in enumerate(loss_grads, start=1):
    updates, state = optimizer.update({'w': jnp.asarray(grad, jnp.float32)},
                                      state, params)
    params = optax.apply_updates(params, updates)
    objective_grad = -batch_size * grad
    alpha = learning_rate * np.sqrt(1 - b2 ** timestep) / (1 - b1 ** timestep)
    want, m, v = (want + alpha * m / (np.sqrt(v) + eps),
                  b1 * m + (1 - b1) * objective_grad,
                  b2 * v + (1 - b2) * objective_grad ** 2)
    np.testing.assert_allclose(params['w'], want, rtol=1e-6, atol=1e-9)
  assert not np.allclose(want, [1.0, -2.0, 0.5])
  # Unlike optax's Adam from the same gradients.
  standard = optim.build_optimizer(
      dataclasses.replace(config, adam_variant='standard'), 10)
  updates, _ = standard.update({'w': jnp.asarray(loss_grads[0], jnp.float32)},
                               standard.init(params), params)
  assert np.all(np.abs(updates['w']) > 1e-4)  # the code's first step is zero


def test_config_json_without_a_newer_field_counts_it_as_its_default(tmp_path):
  # A workdir written before a field existed resumes when the field is at
  # its default, and is refused when it is not.
  config = small_config(tmp_path)
  rundir.prepare_workdir(config)
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['objective'], saved['weight_decay']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  rundir.prepare_workdir(config)
  with pytest.raises(config_lib.ConfigError, match='--objective'):
    rundir.prepare_workdir(dataclasses.replace(config, objective='iwae'))


def test_nonfinite_loss_stops_naming_the_epoch_and_keeps_the_checkpoint(
    tmp_path, monkeypatch):
  config = small_config(tmp_path, num_epochs=2)
  with kill.at_checkpoint(before=lambda epoch: epoch > 1):
    train.train_and_evaluate(config)
  real_loss = objectives.negative_elbo
  monkeypatch.setattr(objectives, 'negative_elbo',
                      lambda *a, **k: jax.tree.map(lambda t: t * jnp.nan,
                                                   real_loss(*a, **k)))
  with pytest.raises(train.TrainingError,
                     match='non-finite loss or gradients at epoch 2, step 1 '):
    train.train_and_evaluate(config)
  assert checkpoint.Checkpointer(tmp_path / 'checkpoints').latest_epoch() == 1
  assert [r['epoch'] for r in files.read_jsonl(tmp_path / 'metrics.jsonl')] == [1]


def _with_a_nan_example(monkeypatch, index):
  """data.load gives linear_gaussian with training example `index` all NaN."""
  real_load = data.load

  def load(*args, **kwargs):
    dataset = real_load(*args, **kwargs)
    train_x = dataset.train.copy()
    train_x[index] = np.nan
    return dataclasses.replace(dataset, train=train_x)

  monkeypatch.setattr(data, 'load', load)


def _step_of_example(config, index, epoch):
  """The 1-based step of `epoch` whose batch holds training example `index`."""
  order = np.asarray(jax.random.permutation(
      jax.random.fold_in(rng.RunKeys.of(config).shuffle, epoch), 2000))
  return int(np.flatnonzero(order == index)[0]) // config.batch_size + 1


def test_nonfinite_step_is_found_in_the_compiled_epoch_or_skipped(
    tmp_path, monkeypatch):
  _with_a_nan_example(monkeypatch, index=1234)
  stopped = small_config(tmp_path / 'stopped', num_epochs=2)
  step = _step_of_example(stopped, 1234, epoch=0)
  with pytest.raises(train.TrainingError,
                     match=f'at epoch 1, step {step} of 20: .*epoch none'):
    train.train_and_evaluate(stopped)
  assert not (tmp_path / 'stopped' / 'metrics.jsonl').read_text()

  # The same workdir resumes with --skip_nonfinite_updates: each epoch skips
  # the one step whose batch holds the NaN example.
  skipping = dataclasses.replace(stopped, skip_nonfinite_updates=True)
  results = train.train_and_evaluate(skipping)
  metrics = files.read_jsonl(tmp_path / 'stopped' / 'metrics.jsonl')
  assert [r['skipped_updates'] for r in metrics] == [1, 1]
  assert all(np.isfinite(r['train_loss']) for r in metrics)
  assert np.isfinite(results['test_elbo'])


def test_skipped_step_leaves_the_state_as_it_was(tmp_path):
  """A finite loss with non-finite gradients is caught too."""
  config = small_config(tmp_path)
  graphdef, optimizer, state = train.initial_state(config, 20)

  class NanGradient:  # log p(x|z) + sqrt(0 * z): value unchanged, gradient NaN
    def __init__(self, params):
      self.model = nnx.merge(graphdef, params)
      self.encode = self.model.encode

    def log_likelihood(self, x, z):
      return self.model.log_likelihood(x, z) + jnp.sqrt(0.0 * jnp.sum(z))

  x = jax.random.normal(jax.random.key(0), (100, 8, 8, 1))
  for skip in (False, True):
    step = step_lib.make_train_step(
        NanGradient, optimizer, objectives.from_config(config, 20),
        skip_nonfinite=skip)
    params, opt_state, stats = jax.jit(step)(
        state['params'], state['opt_state'], x, jax.random.key(1), 0)
    assert np.isfinite(stats['loss']) and not stats['finite']
    unchanged = jax.tree.map(np.array_equal, (params, opt_state),
                             (state['params'], state['opt_state']))
    assert all(jax.tree.leaves(unchanged)) == skip
  normal = step_lib.make_train_step(functools.partial(nnx.merge, graphdef),
                                    optimizer, objectives.from_config(config, 20))
  assert jax.jit(normal)(state['params'], state['opt_state'], x,
                         jax.random.key(1), 0)[2]['finite']


BAD_FLAGS = [
    ({'dataset': 'cifar100'}, 'unknown dataset'),
    ({'likelihood': 'poisson'}, '--likelihood'),
    ({'latent_dim': 0}, '--latent_dim must be positive'),
    ({'hidden_dims': ()}, '--hidden_dims must be one or more'),
    ({'hidden_dims': (32, -4)}, '--hidden_dims must be one or more'),
    ({'batch_size': 2001}, 'larger than the 2000 training examples'),
    ({'dataset': 'mnist', 'likelihood': 'bernoulli'}, '--dynamic_binarization'),
    ({'likelihood': 'bernoulli'}, 'needs binary pixels'),
    ({'dynamic_binarization': True}, 'needs grey-level data'),
    ({'gaussian_variance': '-1'}, '--gaussian_variance'),
    ({'learning_rate': 0.0}, '--learning_rate must be positive'),
    ({'optimizer': 'sgdd'}, '--optimizer'),
    ({'architecture': 'transformer'}, '--architecture'),
    ({'adam_b1': 1.0}, '--adam_b1'),
    ({'workdir': ''}, '--workdir is required'),
    ({'objective': 'iwae', 'kl_warmup_epochs': 1.0}, 'takes no --beta or'),
    ({'weight_decay': float('nan')}, '--weight_decay'),
    # Flags without effect in the chosen combination.
    ({'lr_decay_epochs': (3,)}, '--lr_decay_epochs=3 has no effect here'),
    ({'lr_decay_factor': 0.5, 'lr_schedule': 'cosine'},
     '--lr_decay_factor applies to --lr_schedule=step only'),
    ({'objective': 'iwae', 'analytic_kl': False},
     '--noanalytic_kl has no effect here'),
    ({'likelihood': 'bernoulli', 'gaussian_variance': '0.1'},
     '--gaussian_variance applies to --likelihood=gaussian and gaussian_sigmoid only'),
    ({'optimizer': 'adagrad', 'adam_b1': 0.5}, '--adam_b1 applies to'),
    ({'optimizer': 'adagrad', 'adam_b2': 0.9}, '--adam_b2 applies to'),
    ({'conv_channels': (4, 8)}, '--conv_channels=4,8 has no effect here'),
    ({'output_bias': 'ones'}, "--output_bias='ones' is not one of: zero, data_mean"),
    ({'final_model': 'best'}, "--final_model='best' is not one of: last, best_valid"),
    ({'kernel_init': 'torch'}, "--kernel_init='torch' is not one of: .*pytorch_default"),
    ({'architecture': 'conv', 'hidden_dims': (64,)},
     '--hidden_dims applies to --architecture=mlp only'),
]


@pytest.mark.parametrize('overrides, message', BAD_FLAGS)
def test_bad_flags_fail_before_any_work(tmp_path, overrides, message):
  config = dataclasses.replace(small_config(tmp_path / 'run'), **overrides)
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    train.train_and_evaluate(config)
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists()  # nothing written, nothing loaded


def test_unwritable_workdir_is_refused(tmp_path):
  (tmp_path / 'a_file').touch()
  with pytest.raises(config_lib.ConfigError, match='not writable'):
    train.train_and_evaluate(small_config(tmp_path / 'a_file' / 'run'))


def test_workdir_of_another_run_is_refused_and_left_untouched(tmp_path):
  train.train_and_evaluate(small_config(tmp_path, num_epochs=1))
  before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
  with pytest.raises(config_lib.ConfigError,
                     match=r'--latent_dim \(4 there, 3 now\)'):
    train.train_and_evaluate(small_config(tmp_path, num_epochs=1, latent_dim=3))
  after = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
  assert before == after


def test_a_finished_run_goes_on_to_a_larger_num_epochs(tmp_path):
  # Two epochs, then the same run to four: the epochs of a four-epoch run,
  # the learning rate's step at epoch 3 included.
  flags = dict(lr_schedule='step', lr_decay_epochs=(3,), lr_decay_factor=0.1)
  go_on, whole = tmp_path / 'go_on', tmp_path / 'whole'
  first = train.train_and_evaluate(small_config(go_on, num_epochs=2, **flags))
  first_lines = (go_on / 'metrics.jsonl').read_text()
  results = train.train_and_evaluate(small_config(go_on, num_epochs=4, **flags))
  expected = train.train_and_evaluate(small_config(whole, num_epochs=4, **flags))
  assert without_timing(results) == without_timing(expected)
  assert results['final_epoch'] == 4
  lines = (go_on / 'metrics.jsonl').read_text()
  assert lines.startswith(first_lines)  # the first two epochs as they were
  assert ([without_timing(r) for r in files.read_jsonl(go_on / 'metrics.jsonl')]
          == [without_timing(r) for r in files.read_jsonl(whole / 'metrics.jsonl')])
  assert files.read_json(go_on / 'results_2_epochs.json') == first
  assert files.read_json(go_on / 'config.json')['num_epochs'] == 4
  # Fewer epochs than it trained, or a schedule over all epochs: refused in
  # one line, the workdir untouched.
  cosine = tmp_path / 'cosine'
  train.train_and_evaluate(small_config(cosine, num_epochs=1, lr_schedule='cosine'))
  for workdir, config, message in [
      (go_on, small_config(go_on, num_epochs=3, **flags),
       'has trained 4 epochs, more than --num_epochs=3'),
      (cosine, small_config(cosine, num_epochs=2, lr_schedule='cosine'),
       'under --lr_schedule=cosine, which decays the learning rate over all '
       'epochs: its epochs are not those of a 2-epoch run'),
  ]:
    before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
    with pytest.raises(config_lib.ConfigError, match=message) as caught:
      train.train_and_evaluate(config)
    assert '\n' not in str(caught.value)
    assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == before


def test_a_skipped_step_does_not_delay_the_learning_rate_schedule(tmp_path):
  # One step per epoch, the rate divided by 10 from step 1 on. Step 0 is
  # skipped (NaN inputs); step 1 must be a first Adagrad step at the lower
  # rate, not at the initial one.
  config = small_config(tmp_path, optimizer='adagrad', lr_schedule='step',
                        lr_decay_epochs=(1,), lr_decay_factor=0.1)
  graphdef, optimizer, state = train.initial_state(config, 1)
  model_fn = functools.partial(nnx.merge, graphdef)
  loss_fn = objectives.from_config(config, 1)
  train_step = jax.jit(step_lib.make_train_step(model_fn, optimizer, loss_fn,
                                                skip_nonfinite=True))
  x = data.load('linear_gaussian').train[:100]
  key = jax.random.key(5)
  params, opt_state, stats = train_step(state['params'], state['opt_state'],
                                        x * np.nan, key, 0)
  assert not stats['finite']
  params, _, stats = train_step(params, opt_state, x, key, 1)
  assert stats['finite']
  grads = jax.jit(jax.grad(lambda p: loss_fn(model_fn(p), x, jax.random.fold_in(key, 1),
                                             1)[0]))(state['params'])
  lower = optax.adagrad(0.1 * config.learning_rate)
  updates, _ = lower.update(grads, lower.init(state['params']), state['params'])
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-7),
               params, optax.apply_updates(state['params'], updates))


def test_a_checkpoint_at_or_below_the_latest_is_refused(tmp_path):
  # orbax would skip such a save without an error.
  checkpointer = checkpoint.Checkpointer(tmp_path, 3)
  state = {'w': np.arange(3.0)}
  checkpointer.save(2, state)
  for epoch in (1, 2):
    with pytest.raises(checkpoint.CheckpointError, match='already holds epoch 2'):
      checkpointer.save(epoch, {'w': np.zeros(3)})
  checkpointer.save(3, state)
  np.testing.assert_array_equal(checkpointer.restore(2, state)['w'], state['w'])
  checkpointer.close()


def nan_validation(monkeypatch, epochs):
  """The validation ELBO of these epochs (1-based) is NaN; training is as before."""
  evaluate = train.SingleRun.evaluate
  done = []

  def patched(self, split):
    (terms,) = evaluate(self, split)
    if split != 'valid':
      return [terms]
    done.append(1)
    if len(done) in epochs:
      terms = terms._replace(elbo=np.float32(np.nan))
    return [terms]

  monkeypatch.setattr(train.SingleRun, 'evaluate', patched)
  return done


def test_best_valid_skips_nan_validation_elbos_also_through_a_resume(
    tmp_path, monkeypatch):
  # Epoch 1's validation ELBO is NaN. Uninterrupted, the best epoch is the
  # best finite one; killed after checkpoint 1 (no epoch chosen yet), then
  # after checkpoint 3 (the NaN line first in metrics.jsonl), and resumed,
  # the same.
  config = lambda name: small_config(tmp_path / name, final_model='best_valid')
  nan_validation(monkeypatch, epochs={1})
  whole = train.train_and_evaluate(config('whole'))
  valid = [r['valid_elbo'] for r in files.read_jsonl(tmp_path / 'whole' / 'metrics.jsonl')]
  assert np.isnan(valid[0]) and whole['final_epoch'] == 2 + int(np.argmax(valid[1:]))
  nan_validation(monkeypatch, epochs={1})
  with kill.at_checkpoint(after=lambda epoch: epoch == 1):
    train.train_and_evaluate(config('resumed'))
  nan_validation(monkeypatch, epochs=set())
  with kill.at_checkpoint(after=lambda epoch: epoch == 3):
    train.train_and_evaluate(config('resumed'))
  nan_validation(monkeypatch, epochs=set())
  resumed = train.train_and_evaluate(config('resumed'))
  assert without_timing(resumed) == without_timing(whole)


def test_best_valid_with_no_finite_validation_elbo_ends_in_one_line(
    tmp_path, monkeypatch):
  nan_validation(monkeypatch, epochs={1, 2, 3, 4})
  with pytest.raises(rundir.TrainingError) as error:
    train.train_and_evaluate(small_config(tmp_path, final_model='best_valid'))
  message = str(error.value)
  assert '\n' not in message
  assert 'no epoch of 4 had a finite validation ELBO' in message
  assert not (tmp_path / 'results.json').exists()
