"""vaejax.sweep: masked members, vectorised == standalone == sequential, devices, shards, resume."""

import csv
import functools
import itertools
import dataclasses
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaejax
from vaejax import config as config_lib
from vaejax import estimators
from vaejax import evaluation
from vaejax import files
from vaejax import models
from vaejax import objectives
from vaejax import plots
from vaejax import rng
from vaejax import sweep
from vaejax import train
import kill  # pylint: disable=g-bad-import-order
import test_sharding  # pylint: disable=g-bad-import-order
import pngs  # pylint: disable=g-bad-import-order

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMING_FIELDS = ('epoch_seconds', 'examples_per_second', 'compile_seconds',
                 'train_seconds')
FLAGS = sweep.SweepFlags(latent_dims=(1, 3), seeds=(0, 1), vectorize=True)
# Float tolerance between differently batched programs.
RTOL = 2e-5
# plots.plot_by_latent_dim's NLL and -ELBO bars: matplotlib's first colours.
NLL_AND_ELBO_COLOURS = ((0.122, 0.467, 0.706), (1.0, 0.498, 0.055))


def base_config(workdir, **overrides):
  fields = dict(workdir=str(workdir), dataset='linear_gaussian',
                likelihood='gaussian', hidden_dims=(16,), batch_size=100,
                num_epochs=2, eval_iwae_samples=10, progress=False)
  fields.update(overrides)
  return config_lib.TrainConfig(**fields)


def quiet(*_):
  pass


def run_sweep(workdir, flags=FLAGS, **overrides):
  return sweep.run(base_config(workdir, **overrides), flags, log=quiet)


def member_files(workdir, name):
  member_dir = pathlib.Path(workdir) / name
  metrics = [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
             for r in files.read_jsonl(member_dir / 'metrics.jsonl')]
  results = {k: v for k, v in files.read_json(member_dir / 'results.json').items()
             if k not in TIMING_FIELDS}
  return metrics, results


def assert_close(a, b):
  """Equal structure; numbers equal to RTOL."""
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=RTOL), a, b)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """One vectorised job over all members of FLAGS."""
  workdir = tmp_path_factory.mktemp('reference')
  rows = run_sweep(workdir)
  return workdir, rows


# --- The masked, padded member is the standalone model. ---


def padded_pair(latent_dim=2, max_latent_dim=5, **kwargs):
  config = base_config('unused', latent_dim=latent_dim, **kwargs)
  key = jax.random.key(7)
  small_graphdef, small = nnx.split(models.build_model(config, key), nnx.Param)
  big_graphdef, big = nnx.split(
      models.build_model(dataclasses.replace(config, latent_dim=max_latent_dim),
                        jax.random.key(0)), nnx.Param)
  embedded = sweep.embed_latents(small, big, latent_dim, max_latent_dim)
  mask = (jnp.arange(max_latent_dim) < latent_dim).astype(jnp.float32)
  standalone = lambda p: nnx.merge(small_graphdef, p)
  padded = lambda p: sweep.MaskedLatents(nnx.merge(big_graphdef, p), mask)
  return small, embedded, standalone, padded


@pytest.mark.parametrize('architecture', ['mlp', 'conv'])
def test_embed_then_extract_is_the_identity(architecture):
  small, embedded, _, _ = padded_pair(architecture=architecture, conv_channels=(4, 8))
  back = sweep.extract_latents(embedded, small, 2, 5)
  jax.tree.map(np.testing.assert_array_equal, back, small)
  # What is not the member's is zero.
  zeroed = sweep.embed_latents(jax.tree.map(jnp.zeros_like, small), embedded, 2, 5)
  assert all(jnp.all(z == 0) for z in jax.tree.leaves(zeroed))


FAMILIES = {'diagonal': {}, 'full': dict(posterior='full_covariance'),
            'learned': dict(prior='learned_diagonal'),
            'vamp': dict(prior='vamp', vamp_components=3)}


@pytest.mark.parametrize('objective, num_samples, analytic_kl, family', [
    ('elbo', 1, True, 'diagonal'), ('elbo', 4, False, 'diagonal'),
    ('iwae', 4, None, 'diagonal'), ('elbo', 2, True, 'full'),
    ('iwae', 3, None, 'full'), ('elbo', 2, True, 'learned'),
    ('elbo', 2, False, 'vamp'),
    # The estimators and bounds of vaejax.estimators (log q stopped, paths
    # rescaled): the padding is exact for them too.
    ('iwae dreg', 3, None, 'diagonal'), ('elbo stl', 2, False, 'learned'),
    ('piwae', 2, None, 'full')])
def test_masked_member_computes_the_standalone_function(objective, num_samples,
                                                        analytic_kl, family):
  small, embedded, standalone, padded = padded_pair(**FAMILIES[family])
  x = vaejax.make_linear_gaussian(jax.random.key(1), 64, 3).sample(
      jax.random.key(2), 6).reshape(6, 8, 8, 1)
  estimator_losses = {
      'iwae dreg': objectives.iwae_loss(num_samples=num_samples, estimator='dreg'),
      'elbo stl': objectives.elbo_loss(num_samples=num_samples, analytic_kl=False,
                                       estimator='stl'),
      'piwae': objectives.bound_loss('piwae', estimators.piwae_surrogate,
                                     num_groups=2, num_samples=num_samples)}

  def loss(model_fn, params):
    if objective in estimator_losses:
      return estimator_losses[objective](model_fn(params), x, jax.random.key(3), 0)
    if objective == 'iwae':
      return vaejax.negative_iwae_bound(model_fn(params), x, jax.random.key(3),
                                        num_samples=num_samples)
    return vaejax.negative_elbo(model_fn(params), x, jax.random.key(3),
                                num_samples=num_samples, analytic_kl=analytic_kl)

  # Compiled: one program each, not op by op.
  (loss_small, terms_small), grads_small = jax.jit(jax.value_and_grad(
      lambda p: loss(standalone, p), has_aux=True))(small)
  (loss_big, terms_big), grads_big = jax.jit(jax.value_and_grad(
      lambda p: loss(padded, p), has_aux=True))(embedded)
  np.testing.assert_allclose(loss_big, loss_small, rtol=1e-6)
  assert_close(terms_big, terms_small)
  # The member's weights get the standalone gradients (to float32 round-off
  # of each array's scale: sums run in another order); the rest get none.
  jax.tree.map(lambda got, want: np.testing.assert_allclose(
      got, want, rtol=RTOL, atol=1e-6 * float(jnp.max(jnp.abs(want)))),
               sweep.extract_latents(grads_big, small, 2, 5), grads_small)
  outside = jax.tree.map(lambda g, e: g - e, grads_big,
                         sweep.embed_latents(grads_small, grads_big, 2, 5))
  jax.tree.map(lambda o, g: np.testing.assert_allclose(o, 0, atol=1e-5 * (
      1 + float(jnp.max(jnp.abs(g))))), outside, grads_big)
  zero_pattern = sweep.embed_latents(jax.tree.map(jnp.ones_like, small),
                                     grads_big, 2, 5)
  for g, on in zip(jax.tree.leaves(grads_big), jax.tree.leaves(zero_pattern)):
    assert jnp.all(jnp.where(on == 0, g, 0) == 0)
  bound = lambda model_fn, p: vaejax.iwae_bound(model_fn(p), x[0], jax.random.key(4), 50)
  bound_small = jax.jit(functools.partial(bound, standalone))(small)
  bound_big = jax.jit(functools.partial(bound, padded))(embedded)
  np.testing.assert_allclose(bound_big, bound_small, rtol=1e-6)


# --- Whole sweeps. ---


def test_vectorised_member_equals_a_standalone_train_run(reference, tmp_path):
  workdir, rows = reference
  assert [(r['latent_dim'], r['seed']) for r in rows] == [(1, 0), (1, 1), (3, 0), (3, 1)]
  standalone = base_config(tmp_path, latent_dim=3, seed=1)
  train.train_and_evaluate(standalone)
  assert_close(member_files(workdir, 'latent003_seed1'),
               member_files(tmp_path, '.'))


def test_vectorised_equals_sequential(reference, tmp_path):
  workdir, _ = reference
  run_sweep(tmp_path, dataclasses.replace(FLAGS, vectorize=False))
  for member in sweep.members_of(FLAGS):
    assert_close(member_files(workdir, member.name),
                 member_files(tmp_path, member.name))


def test_vectorised_members_take_the_sequential_steps_on_real_images(tfds_dirs):
  # The default model (784-500-z) on binarized MNIST's first 1,280 images,
  # ten steps of 128. Each padded, masked member computes its standalone
  # loss at every step to float32 round-off (measured: at most 1.2e-7
  # relative, two ulps; the bound is 1e-6, where a single padded latent
  # dimension left unmasked is off by 1.5e-5), and so its test ELBO after
  # the steps (measured equal).
  # Trained figures are not compared: a ReLU on its kink and Adam's division
  # of a rare pixel's tiny gradient by its own size make round-off an
  # lr-sized step; after one full epoch members differed by up to 0.034
  # nats, and sequential runs from weights one ulp apart by up to 0.059
  # (`python -m benchmarks.sweep_agreement`, BENCHMARKS.md section 2).
  data_dir, manual_root = tfds_dirs
  full = vaejax.data.load('binarized_mnist', tfds_data_dir=data_dir,
                          tfds_manual_dir=manual_root)
  dataset = dataclasses.replace(full, train=full.train[:1280],
                                test=full.test[:1000])
  configs = [config_lib.TrainConfig(workdir='unused', dataset='binarized_mnist',
                                    latent_dim=z, progress=False)
             for z in (2, 20)]
  steps = 10
  runs = [train.initial_state(c, steps) for c in configs]
  members = sweep.VectorizedMembers(
      configs, [jax.tree.map(np.asarray, state) for _, _, state in runs], dataset)
  member_stats = members.train_epoch(0)
  member_elbos = members.evaluate('test')
  for config, (graphdef, optimizer, state), stats, member_elbo in zip(
      configs, runs, member_stats, member_elbos):
    keys = rng.RunKeys.of(config)
    model_fn = functools.partial(nnx.merge, graphdef)
    params, _, alone = jax.jit(train.build_train_epoch(
        config, model_fn, optimizer, steps))(
            state['params'], state['opt_state'], dataset.train, jnp.int32(0),
            keys.train, keys.data)
    assert stats['loss'].shape == (steps,)
    np.testing.assert_allclose(stats['loss'], alone['loss'], rtol=1e-6)
    elbo = jax.jit(evaluation.make_evaluate(model_fn, config.eval_batch_size))(
        params, members.test_inputs, keys.test).elbo
    np.testing.assert_allclose(member_elbo.elbo, elbo, rtol=1e-6)


def test_outputs_of_a_sweep(reference):
  workdir, _ = reference
  # The tables against what each member wrote itself.
  members = {m.name: files.read_json(workdir / m.name / 'results.json')
             for m in sweep.members_of(FLAGS)}
  with open(workdir / 'results.csv') as f:
    table = list(csv.DictReader(f))
  assert [(int(r['latent_dim']), int(r['seed'])) for r in table] == [
      (1, 0), (1, 1), (3, 0), (3, 1)]
  for r in table:
    member = members[f'latent{int(r["latent_dim"]):03d}_seed{r["seed"]}']
    for column in ('test_elbo', 'test_log_likelihood', 'test_kl', 'test_nll_iwae'):
      np.testing.assert_allclose(float(r[column]), member[column], rtol=1e-6)
    assert int(r['active_units']) == member['active_units']
  # The markdown row of latent size 3: mean +- sample standard deviation of
  # its two seeds, to the printed two decimals.
  markdown = (workdir / 'results.md').read_text()
  row = re.search(r'^\| 3 \| 2 \| (-?[\d.]+) \+- ([\d.]+) \|', markdown, re.M)
  elbos = [members[f'latent003_seed{s}']['test_elbo'] for s in (0, 1)]
  assert abs(float(row[1]) - (elbos[0] + elbos[1]) / 2) <= 0.005 + 1e-9
  assert abs(float(row[2]) - abs(elbos[0] - elbos[1]) / np.sqrt(2)) <= 0.005 + 1e-9
  # The figures: each latent size's curve in its colour; the bound and the
  # active units in two panels; each size's samples in a panel of its own.
  pngs.assert_figure(workdir / 'bound_vs_examples.png', (6.0, 4.0),
                     plots._colors(2))  # pylint: disable=protected-access
  pngs.assert_figure(workdir / 'nll_and_active_units.png', (10.0, 4.0),
                     NLL_AND_ELBO_COLOURS)
  samples = pngs.assert_figure(workdir / 'samples_by_latent_dim.png', (4.8, 2.7))
  for panel in np.split(samples[..., :3], 2, axis=1):
    assert np.ptp(panel) > 0.3  # an image, not an empty panel


def test_vectorised_members_are_evaluated_at_their_best_epochs(tmp_path):
  # 50 training examples at a high learning rate: the member of latent size
  # 4 has its best validation ELBO at epoch 3 of 5, the other at epoch 5.
  named = vaejax.data.load('linear_gaussian')
  path = tmp_path / 'few.npz'
  np.savez(path, train=named.train[:50], valid=named.valid[:100],
           test=named.test[:100])
  run_sweep(tmp_path / 'sweep', sweep.SweepFlags(latent_dims=(2, 4), vectorize=True),
            dataset=str(path), batch_size=50, hidden_dims=(64,),
            learning_rate=0.03, num_epochs=5, final_model='best_valid')
  final_epochs = []
  for name in ('latent002_seed0', 'latent004_seed0'):
    metrics, results = member_files(tmp_path / 'sweep', name)
    valid = [r['valid_elbo'] for r in metrics]
    assert results['final_epoch'] == 1 + int(np.argmax(valid)), valid
    # The final figures are those of the chosen epoch's parameters.
    np.testing.assert_allclose(
        results['test_elbo'], metrics[results['final_epoch'] - 1]['test_elbo'],
        rtol=RTOL)
    final_epochs.append(results['final_epoch'])
  assert final_epochs == [5, 3]


def test_independent_data_order_gives_each_member_its_seeds_order(tmp_path):
  flags = sweep.SweepFlags(latent_dims=(2,), seeds=(0, 5), independent_data_order=True,
                           vectorize=True)
  run_sweep(tmp_path / 'sweep', flags)
  standalone = base_config(tmp_path / 'alone', latent_dim=2, seed=5, data_seed=5)
  train.train_and_evaluate(standalone)
  assert_close(member_files(tmp_path / 'sweep', 'latent002_seed5'),
               member_files(tmp_path / 'alone', '.'))


def test_shards_then_summarize_equal_one_job(reference, tmp_path):
  workdir, rows = reference
  for shard in ('0/2', '1/2'):
    assert run_sweep(tmp_path, dataclasses.replace(FLAGS, shard=shard)) is None
  merged = sweep.summarize(tmp_path, log=quiet)
  assert_close([{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in merged],
               [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows])


def test_a_finished_sweep_goes_on_to_a_larger_num_epochs(reference, tmp_path):
  # The reference sweep's two epochs, copied, then a third for every member,
  # vectorised from each one's last checkpoint.
  workdir = shutil.copytree(reference[0], tmp_path / 'sweep')
  rows = run_sweep(workdir, num_epochs=3)
  assert [r['epochs'] for r in rows] == [3] * 4
  assert files.read_json(workdir / sweep.SWEEP_FILE)['num_epochs'] == 3
  for member in sweep.members_of(FLAGS):
    old = files.read_jsonl(reference[0] / member.name / 'metrics.jsonl')
    new = files.read_jsonl(workdir / member.name / 'metrics.jsonl')
    assert [r['epoch'] for r in new] == [1, 2, 3] and new[:2] == old
    assert (workdir / member.name / 'results_2_epochs.json').exists()


def test_resume_of_a_half_finished_sweep(reference, tmp_path):
  workdir, rows = reference
  # Sequentially: the first member finishes, the second dies after epoch 1.
  saves = itertools.count(1)
  with kill.at_checkpoint(after=lambda epoch: next(saves) == 3):
    run_sweep(tmp_path, dataclasses.replace(FLAGS, vectorize=False))
  first = tmp_path / 'latent001_seed0'
  finished = {p: p.stat().st_mtime_ns for p in first.rglob('*') if p.is_file()}
  assert (first / 'results.json').exists()
  assert not (tmp_path / 'latent001_seed1' / 'results.json').exists()
  # Vectorised, the same sweep skips the finished member and resumes the rest.
  resumed = run_sweep(tmp_path)
  assert {p: p.stat().st_mtime_ns for p in first.rglob('*') if p.is_file()} == finished
  assert_close([{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in resumed],
               [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows])


def run_binary(*args, env=None):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', *args], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=600, env=env)


# The host-device runs are compared with the in-process reference, which
# runs on the default backend: on a GPU machine that is another platform.
on_host_platform = pytest.mark.skipif(
    jax.default_backend() != 'cpu',
    reason='compares CPU host devices with a reference run on another backend')


# In one process with 4 host devices: the sweep of FLAGS (its members
# sharded over the devices, 4 on 4) into sys.argv[1]; the sweep of one member
# (its batch sharded over the devices) into sys.argv[2]; that member as a
# single run (`train.train_and_evaluate`, the trainer of experiments.train)
# into sys.argv[3]; then the per-device batch of the epoch program, for one
# member, for two, and for the single run, and the examples of one device in
# the single run's final evaluation.
FOUR_DEVICES = r"""
import dataclasses, re, sys, jax, numpy as np
from vaejax import config as config_lib, data, sweep, train
def config(workdir, latent_dim=2):
  return config_lib.TrainConfig(
      workdir=workdir, dataset='linear_gaussian', likelihood='gaussian',
      hidden_dims=(16,), batch_size=100, num_epochs=2, eval_iwae_samples=10,
      latent_dim=latent_dim, progress=False)
sweep.run(config(sys.argv[1]), sweep.SweepFlags(latent_dims=(1, 3), seeds=(0, 1),
                                                vectorize=True), log=print)
sweep.run(config(sys.argv[2]), sweep.SweepFlags(latent_dims=(3,), seeds=(1,),
                                                vectorize=True), log=print)
single = dataclasses.replace(config(sys.argv[3], 3), seed=1)
train.train_and_evaluate(single)
dataset = data.load('linear_gaussian')
# The first layer's input on one device: [members, batch, 64] (or without
# the member axis where XLA drops it).
rows = lambda text: sorted(set(re.findall(r'f32\[(?:\d+,)?(\d+),64\]', text))
                           - {'1', '16'})
for latent_dims in ((3,), (1, 3)):
  configs = [config('unused', k) for k in latent_dims]
  states = [jax.tree.map(np.asarray, train.initial_state(c, 20)[2])
            for c in configs]
  text = sweep.VectorizedMembers(configs, states, dataset).epoch_program.as_text()
  print(len(latent_dims), rows(text))
run = train.SingleRun(single, *train.initial_state(single, 20), dataset)
print('single', rows(run.epoch_program.as_text()))
final = train.final_program(single, run._example_sharding).lower(
    run._state['params'], run._eval_x['test'], run._eval_x['train'],
    run._keys['test'], run._keys['iwae']).compile().as_text()
# The IWAE bound's K = 10 draws of z (size 3) of one device's examples.
print('final', sorted(set(re.findall(r'f32\[(\d+),10,3\]', final))))
""" + test_sharding.SHARDED_LOSSES


@on_host_platform
def test_four_devices_give_the_results_of_one(reference, tmp_path):
  workdir, _ = reference
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4')
  four, one, single = (tmp_path / 'four_members', tmp_path / 'one_member',
                       tmp_path / 'single')
  result = subprocess.run(
      [sys.executable, '-c', FOUR_DEVICES, str(four), str(one),
       str(single / 'latent003_seed1')],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'on 4 device(s)' in result.stdout
  for member in sweep.members_of(FLAGS):
    assert_close(member_files(four, member.name),
                 member_files(workdir, member.name))
  # One member: its batch of 100 split over the 4 devices, and the results
  # of one device; so for the single run, whose final evaluation gives each
  # device 125 of the 500 test examples. Two members (padded to 4, one per
  # device): each device a whole batch.
  lines = result.stdout.splitlines()
  assert lines[-8:-4] == [
      "1 ['25']", "2 ['100']", "single ['25']", "final ['125']"], result.stdout
  # The library's batched losses on a batch sharded over the 4 devices.
  assert lines[-4:] == test_sharding.SHARDED_LOSSES_PRINT, result.stdout
  assert 'on 4 devices: each batch of 100 split into 4 of 25' in result.stdout
  for name in (one, single):
    assert_close(member_files(name, 'latent003_seed1'),
                 member_files(workdir, 'latent003_seed1'))


def test_resume_after_switching_to_vectorised_rewinds_cleanly(tmp_path):
  # One after another, the first member checkpoints its last epoch (3; with
  # 2 kept, epoch 1 is gone) and dies before its results. Vectorised, the
  # members resume from the last epoch they all have (0): the first member's
  # later checkpoints, digests and metrics lines are deleted, then written
  # once each by the program of all members.
  overrides = dict(num_epochs=3, checkpoints_to_keep=2)
  with kill.at_checkpoint(after=lambda epoch: epoch == 3):
    run_sweep(tmp_path, dataclasses.replace(FLAGS, vectorize=False), **overrides)
  first = tmp_path / 'latent001_seed0'
  assert not (first / 'results.json').exists()
  assert sorted(p.name for p in (first / 'checkpoints').glob('[0-9]*')) == ['2', '3']
  lines = []
  sweep.run(base_config(tmp_path, **overrides), FLAGS, log=lines.append)
  assert any('latent001_seed0: rewound from epoch 3 to 0' in l for l in lines)
  for member in sweep.members_of(FLAGS):
    member_dir = tmp_path / member.name
    saved = sorted(p.name for p in (member_dir / 'checkpoints').glob('[0-9]*'))
    digests = json.loads((member_dir / 'checkpoints' / 'sha256.json').read_text())
    assert saved == sorted(digests) == ['2', '3'], member.name
    epochs = [r['epoch'] for r in files.read_jsonl(member_dir / 'metrics.jsonl')]
    assert epochs == [1, 2, 3], member.name
    assert (member_dir / 'results.json').exists()


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# One process of a two-process job (sys.argv[4] its index, sys.argv[3] the
# coordinator's port), as experiments.sweep and experiments.train run with
# --distributed: the sweep of FLAGS into sys.argv[1], then its member
# latent003_seed1 as a single run into sys.argv[2].
TWO_PROCESSES = r"""
import dataclasses, sys
from vaejax import config as config_lib, devices, sweep, train
devices.initialize(devices.DistributedFlags(
    distributed=True, coordinator_address=f'127.0.0.1:{sys.argv[3]}',
    num_processes=2, process_id=int(sys.argv[4])))
log = print if int(sys.argv[4]) == 0 else lambda *_: None
config = config_lib.TrainConfig(
    workdir=sys.argv[1], dataset='linear_gaussian', likelihood='gaussian',
    hidden_dims=(16,), batch_size=100, num_epochs=2, eval_iwae_samples=10,
    progress=False)
sweep.run(config, sweep.SweepFlags(latent_dims=(1, 3), seeds=(0, 1),
                                   vectorize=True), log=log)
train.train_and_evaluate(dataclasses.replace(
    config, workdir=sys.argv[2], latent_dim=3, seed=1))
"""


@on_host_platform
def test_two_processes_give_the_results_of_one(reference, tmp_path):
  # A multi-host job on one machine: two processes with two CPU devices each,
  # one program over the four, through jax.distributed on the loopback: a
  # sweep's members split over the devices, then one model's batches.
  workdir, _ = reference
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2')
  port = free_port()
  swept, single = tmp_path / 'sweep', tmp_path / 'single'
  processes = [
      subprocess.Popen(
          [sys.executable, '-c', TWO_PROCESSES, str(swept),
           str(single / 'latent003_seed1'), str(port), str(i)],
          cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'on 4 device(s)' in outputs[0][0]
  assert 'on 4 devices: each batch of 100 split into 4 of 25' in outputs[0][0]
  # Process 1 computes; process 0 reports (Gloo's own lines aside).
  assert 'epoch' not in outputs[1][0] and 'member' not in outputs[1][0]
  for member in sweep.members_of(FLAGS):
    assert_close(member_files(swept, member.name),
                 member_files(workdir, member.name))
  assert_close(member_files(single, 'latent003_seed1'),
               member_files(workdir, 'latent003_seed1'))


@pytest.mark.parametrize('backend, vectorize, expected', [
    ('cpu', None, False), ('gpu', None, True), ('tpu', None, True),
    ('cpu', True, True), ('gpu', False, False),
])
def test_unset_vectorize_means_vectorized_on_accelerators_only(
    monkeypatch, backend, vectorize, expected):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  flags = dataclasses.replace(FLAGS, vectorize=vectorize)
  assert sweep.members.vectorizes(flags) is expected


class Chosen(Exception):
  pass


def test_the_sweep_trains_as_vectorizes_says(tmp_path, monkeypatch):
  def chosen(name):
    def record(*_):
      raise Chosen(name)
    return record

  monkeypatch.setattr(sweep.members, 'vectorizes', lambda flags: True)
  monkeypatch.setattr(sweep.driver, '_train_vectorized', chosen('vectorised'))
  monkeypatch.setattr(train, 'train_loaded', chosen('one after another'))
  with pytest.raises(Chosen, match='vectorised'):
    run_sweep(tmp_path, dataclasses.replace(FLAGS, vectorize=False))


def test_a_vectorised_sweep_needs_partitionable_threefry(tmp_path):
  # Without it a padded member's draws are not its standalone draws: refused
  # before any file is written; one after another is unaffected.
  before = jax.config.jax_threefry_partitionable
  jax.config.update('jax_threefry_partitionable', False)
  try:
    with pytest.raises(config_lib.ConfigError,
                       match='only with jax_threefry_partitionable=True'):
      run_sweep(tmp_path / 'vectorised')
    assert not (tmp_path / 'vectorised').exists()
    with pytest.raises(Chosen):  # goes on, to train one after another
      with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, 'train_loaded', lambda *_: (_ for _ in ()).throw(Chosen()))
        run_sweep(tmp_path / 'sequential', dataclasses.replace(FLAGS, vectorize=False))
  finally:
    jax.config.update('jax_threefry_partitionable', before)


def test_a_workdir_of_another_sweep_is_refused(reference):
  workdir, _ = reference
  with pytest.raises(config_lib.ConfigError, match=r'--latent_dims \(\[1, 3\] there'):
    run_sweep(workdir, sweep.SweepFlags(latent_dims=(1, 4), seeds=(0, 1)))


@pytest.mark.parametrize('given, top_latent_dims, expected', [
    ((), (), (1, 3)),  # --latent_dims' value (here FLAGS', else its default)
    (('latent_dim',), (), (7,)),  # a preset's size, swept over seeds
    (('latent_dims', 'latent_dim'), (), (1, 3)),
    ((), (2,), (7,)),  # z_2 swept at --latent_dim's z
    (('latent_dims',), (2,), (1, 3)),
])
def test_latent_dims_not_given_are_latent_dims_one_size(given, top_latent_dims,
                                                        expected):
  flags = dataclasses.replace(FLAGS, top_latent_dims=top_latent_dims)
  resolved = sweep.with_preset_size(flags, base_config('unused', latent_dim=7),
                                    given=given.__contains__)
  assert resolved.latent_dims == expected


def test_a_sweep_of_the_top_layer_size(tmp_path, monkeypatch):
  # The driver and the summary, with each member's training replaced by
  # files of made-up figures (two-layer training: tests/test_families_nets.py).
  trained = []

  def fake_train(config, dataset, run_dir):
    del dataset
    trained.append(config)
    top = config.top_latent_dim
    files.append_jsonl(run_dir.metrics_path, {
        'epoch': 1, 'examples_seen': 2000, 'train_loss': 9.0 + top,
        'test_elbo': -9.0 - top})
    plots.save_grid(run_dir.path / 'samples.png', np.zeros((4, 8, 8, 1)), 2)
    results = {'latent_dim': config.latent_dim, 'top_latent_dim': top,
               'test_elbo': -9.0 - top, 'test_log_likelihood': -8.0,
               'test_kl': 1.0 + top, 'test_nll_iwae': 8.5 + top,
               'active_units': 2, 'iwae_samples': 4, 'epochs': 1,
               'train_seconds': 0.1, 'active_units_per_layer': [2, top],
               'test_kl_per_layer': [1.0, float(top)]}
    run_dir.write_results(results)
    return results

  monkeypatch.setattr(train, 'train_loaded', fake_train)
  flags = sweep.SweepFlags(latent_dims=(2,), top_latent_dims=(1, 3), seeds=(0,))
  rows = run_sweep(tmp_path, flags, top_hidden_dims=(8,))
  assert [(c.latent_dim, c.top_latent_dim, pathlib.Path(c.workdir).name)
          for c in trained] == [(2, 1, 'latent002_top001_seed0'),
                                (2, 3, 'latent002_top003_seed0')]
  assert [(r['latent_dim'], r['top_latent_dim']) for r in rows] == [(2, 1), (2, 3)]
  # The table by size groups by z_2's size; the csv has it per member.
  markdown = (tmp_path / 'results.md').read_text()
  assert '| top_latent_dim | seeds | test ELBO |' in markdown
  assert '| 3 | 1 | -12.00 | 11.50 | 2.00 / 3.00 |' in markdown
  with open(tmp_path / 'results.csv') as f:
    assert [r['top_latent_dim'] for r in csv.DictReader(f)] == ['1', '3']
  pngs.assert_figure(tmp_path / 'nll_and_active_units.png', (10.0, 4.0),
                     NLL_AND_ELBO_COLOURS)
  with pytest.raises(config_lib.ConfigError,
                     match=r'--top_latent_dims \(\[1, 3\] there, \[1, 4\] now'):
    run_sweep(tmp_path, dataclasses.replace(flags, top_latent_dims=(1, 4)),
              top_hidden_dims=(8,))


def test_two_layer_members_show_each_layer_in_the_tables(tmp_path):
  from vaejax.sweep import summary  # pylint: disable=g-import-not-at-top
  rows = [{'latent_dim': d, 'seed': 0, 'test_elbo': -100.0 - d,
           'test_log_likelihood': -90.0, 'test_kl': 10.0 + d,
           'test_nll_iwae': 95.0, 'active_units': d, 'iwae_samples': 10,
           'epochs': 1, 'train_seconds': 1.5, 'top_latent_dim': 4,
           'active_units_per_layer': [d, 1],
           'test_kl_per_layer': [8.0 + d, 2.0]} for d in (2, 3)]
  markdown = summary.results_markdown(rows)
  assert '| test KL (z / z_2) |' in markdown and '| active units (z / z_2) |' in markdown
  assert '| 3 | 4 | 0 | -103.00 | -90.00 | 11.00 / 2.00 | 95.00 | 3 / 1 |' in markdown
  # Per size: mean +- std over seeds of each layer's active units.
  two_seeds = rows + [{**rows[1], 'seed': 1, 'active_units_per_layer': [1, 2]}]
  assert '| 3 | 2 | -103.00 +- 0.00 | 95.00 +- 0.00 | 2.00 +- 1.41 / 1.50 +- 0.71 |' in (
      summary.results_markdown(two_seeds))
  summary._write_csv(tmp_path / 'results.csv', rows)  # pylint: disable=protected-access
  with open(tmp_path / 'results.csv') as f:
    read = list(csv.DictReader(f))
  assert [(r['top_latent_dim'], r['active_units_per_layer'], r['test_kl_per_layer'])
          for r in read] == [('4', '2;1', '10.0;2.0'), ('4', '3;1', '11.0;2.0')]
  # One-layer members: the tables as before, without the layer columns.
  one = [{k: v for k, v in r.items() if 'per_layer' not in k} for r in rows]
  summary._write_csv(tmp_path / 'one.csv', one)  # pylint: disable=protected-access
  assert 'per_layer' not in (tmp_path / 'one.csv').read_text()
  assert '| 3 | 0 | -103.00 | -90.00 | 13.00 | 95.00 | 3 |' in summary.results_markdown(one)
