"""The flagfile presets of experiments/flags/: valid as written, and they run.

Each preset is parsed by the flags of the binary it is for and must pass
`config.validate` at its full budget on its own dataset, so that a renamed
flag or a value the checks refuse fails here. Then the binary runs it for a
few steps on the generated `linear_gaussian` dataset, with only what that
dataset needs changed (real-valued pixels: a Gaussian likelihood, no
binarization) and the budget cut, so the presets cannot rot.
"""

import dataclasses
import json
import pathlib
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from vaejax import config as config_lib
from vaejax import sweep
from vaejax import optim

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGS_DIR = REPO_ROOT / 'experiments' / 'flags'

# preset -> the binary that runs it.
PRESETS = {
    'flax_example.flags': 'train',
    'kingma_welling_fig2.flags': 'sweep',
    'kingma_welling_frey.flags': 'sweep',
    'burda_table1.flags': 'train',
    'burda_table1_two_layer.flags': 'train',
    'pythae_binarized_mnist.flags': 'train',
}

ON_GENERATED_DATA = ['--dataset=linear_gaussian', '--likelihood=gaussian',
                     '--nodynamic_binarization', '--num_epochs=1',
                     '--eval_iwae_samples=10', '--noprogress']


def test_every_preset_is_listed_here():
  assert sorted(p.name for p in FLAGS_DIR.glob('*.flags')) == sorted(PRESETS)


def parse_preset(name, *extra):
  """(TrainConfig, SweepFlags or None) of a preset as its binary parses it.

  `name`: a preset's file name, or the path of a copy of one.
  """
  flagfile = FLAGS_DIR / name
  flag_values = flags.FlagValues()
  is_sweep = PRESETS[flagfile.name] == 'sweep'
  exclude = ('latent_dim', 'seed') if is_sweep else ()
  config_lib.define_flags(config_lib.TrainConfig, flag_values, exclude=exclude)
  if is_sweep:
    config_lib.define_flags(sweep.SweepFlags, flag_values)
  flag_values(['prog', f'--flagfile={flagfile}', '--workdir=unused',
               *extra])
  config = config_lib.from_flags(config_lib.TrainConfig, flag_values,
                                 exclude=exclude)
  sweep_flags = (config_lib.from_flags(sweep.SweepFlags, flag_values)
                 if is_sweep else None)
  return config, sweep_flags


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_preset_is_valid_at_its_full_budget(name):
  config, sweep_flags = parse_preset(name)
  config_lib.validate(config)
  if sweep_flags is not None:
    sweep.members_of(sweep_flags)


def test_burda_preset_is_the_papers_setup():
  config, _ = parse_preset('burda_table1.flags')
  assert (config.hidden_dims, config.latent_dim, config.activation) == (
      (200, 200), 50, 'tanh')
  assert (config.batch_size, config.adam_eps, config.eval_iwae_samples) == (
      20, 1e-4, 5000)
  # 3^i epochs at 1e-3 * 10^(-i/7), i = 0..7: the schedule ends with the run.
  expected = np.concatenate([np.full(3 ** i, 1e-3 * 10 ** (-i / 7))
                             for i in range(8)])
  assert config.num_epochs == len(expected) == 3280
  steps_per_epoch = 7
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  epochs = np.arange(config.num_epochs)
  for offset in (0, steps_per_epoch - 1):  # every step of each epoch
    np.testing.assert_allclose(
        [schedule(int(e) * steps_per_epoch + offset) for e in epochs],
        expected, rtol=1e-6)


def test_kingma_welling_preset_is_the_papers_setup():
  config, sweep_flags = parse_preset('kingma_welling_fig2.flags')
  assert sweep_flags.latent_dims == (3, 5, 10, 20, 200)
  assert (config.hidden_dims, config.activation, config.optimizer,
          config.batch_size, config.num_samples) == ((500,), 'tanh', 'adagrad',
                                                      100, 1)
  # A N(0, I) prior on the parameters, per training example.
  np.testing.assert_allclose(config.weight_decay, 1 / config.spec.sizes[0])


def test_kingma_welling_frey_preset_is_the_papers_setup():
  config, sweep_flags = parse_preset('kingma_welling_frey.flags')
  assert sweep_flags.latent_dims == (2, 5, 10, 20)
  assert (config.dataset, config.hidden_dims, config.activation,
          config.optimizer, config.batch_size, config.likelihood) == (
              'frey_face', (200,), 'tanh', 'adagrad', 100, 'gaussian_sigmoid')
  np.testing.assert_allclose(config.weight_decay, 1 / config.spec.sizes[0],
                             rtol=1e-3)


def test_pythae_preset_is_pythaes_setup():
  config, _ = parse_preset('pythae_binarized_mnist.flags')
  assert (config.dataset, config.latent_dim, config.hidden_dims,
          config.activation, config.batch_size, config.num_epochs) == (
              'binarized_mnist', 40, (400, 400), 'relu', 100, 500)
  # Adam at 1e-4, times 10^(-1/5) after epochs 200 and 350 (1-based).
  expected = 1e-4 * 10 ** (-np.array([0] * 200 + [1] * 150 + [2] * 150) / 5)
  steps_per_epoch = 3
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  for offset in (0, steps_per_epoch - 1):
    np.testing.assert_allclose(
        [schedule(e * steps_per_epoch + offset) for e in range(500)],
        expected, rtol=1e-6)


def run_binary(binary, *args):
  return subprocess.run(
      [sys.executable, '-m', f'experiments.{binary}', *args], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=300)


def test_burda_preset_runs_on_generated_data(tmp_path):
  # One epoch of the 2,000 generated examples: 100 steps at Burda et al.'s
  # batch of 20; the run records the preset as the binary's flags parse it.
  # The generated data have a validation split of their own, which
  # --num_validation refuses: the preset without that line (its value is
  # checked with the two-layer preset's, which includes this one).
  name = 'burda_table1.flags'
  flagfile = tmp_path / name
  flagfile.write_text(''.join(
      line for line in (FLAGS_DIR / name).read_text().splitlines(keepends=True)
      if not line.startswith('--num_validation=')))
  extra = [*ON_GENERATED_DATA, '--objective=iwae', '--num_samples=5']
  result = run_binary('train', f'--flagfile={flagfile}',
                      f'--workdir={tmp_path / "run"}', *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  config, _ = parse_preset(flagfile, *extra)
  expected = json.loads(config_lib.to_json(config))
  assert saved.keys() == expected.keys()
  differ = {k for k in saved if saved[k] != expected[k]}
  assert differ == {'workdir'}, {k: (saved[k], expected[k]) for k in differ}
  assert (saved['dataset'], saved['num_epochs'], saved['adam_variant']) == (
      'linear_gaussian', 1, 'iwae_code')
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert np.isfinite(results['test_elbo'])
  assert np.isfinite(results['test_nll_iwae'])


def test_two_layer_burda_preset_is_the_one_layer_one_with_a_second_layer():
  # The nested flagfile: everything else is the one-layer preset's.
  config, _ = parse_preset('burda_table1_two_layer.flags', '--objective=iwae',
                           '--num_samples=5')
  one_layer, _ = parse_preset('burda_table1.flags')
  differ = {f.name for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(one_layer, f.name)}
  assert differ == {'latent_dim', 'top_latent_dim', 'objective', 'num_samples'}


RECORD_ARGS = """#!/bin/sh
# Stands in for the interpreter: appends its arguments, one JSON list a line.
exec "{python}" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "{log}"
"""


def make_calls(tmp_path, *targets_and_variables):
  """The argument lists `make` passes to the interpreter, which only records them."""
  stub_bin = tmp_path / 'bin'
  stub_bin.mkdir()
  log = tmp_path / 'calls.jsonl'
  stub = stub_bin / 'python'
  stub.write_text(RECORD_ARGS.format(python=sys.executable, log=log))
  stub.chmod(0o755)
  # BIN: the stub instead of .venv/bin; STAMP: a file newer than
  # pyproject.toml, so that make does not install first.
  result = subprocess.run(
      ['make', f'BIN={stub_bin}', f'STAMP={stub}', *targets_and_variables],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return [json.loads(line) for line in log.read_text().splitlines()]


def flag_values_of(call):
  """{flag: value} of a recorded call, the flagfile's lines first."""
  module, *args = call[1:]
  values = {'module': module}

  def read_flagfile(path):  # its lines in order, a nested flagfile's in place
    for line in (REPO_ROOT / path).read_text().splitlines():
      if line.startswith('--flagfile='):
        read_flagfile(line.split('=', 1)[1])
      elif line.startswith('--'):
        values.update([line[2:].split('=', 1) if '=' in line else (line[2:], True)])

  for arg in args:
    if arg.startswith('--flagfile='):
      read_flagfile(arg.split('=', 1)[1])
    elif '=' in arg:
      values.update([arg[2:].split('=', 1)])
    else:
      name = arg[2:]
      values[name[2:] if name.startswith('no') else name] = not name.startswith('no')
  return values


@pytest.mark.parametrize('target, latent_dims', [
    ('burda', ('50', None)), ('burda_two_layer', ('100', '50'))])
def test_make_burda_runs_the_six_rows_of_table_1(tmp_path, target, latent_dims):
  calls = make_calls(tmp_path, target, 'BURDA_FLAGS=--num_epochs=40',
                     'TFDS_MANUAL_DIR=/data', 'RESULTS_DIR=out')
  rows = [flag_values_of(c) for c in calls]
  assert all(r['module'] == 'experiments.train' for r in rows)
  # The VAE rows use the sampled KL, as the paper does; IWAE has none.
  assert sorted((r['objective'], r['num_samples'], r.get('analytic_kl'))
                for r in rows) == [('elbo', '1', False), ('elbo', '5', False),
                                   ('elbo', '50', False), ('iwae', '1', None),
                                   ('iwae', '5', None), ('iwae', '50', None)]
  assert sorted(r['workdir'] for r in rows) == [
      f'out/{target}_{o}_k{k}' for o in ('elbo', 'iwae') for k in (1, 5, 50)]
  for r in rows:
    assert (r['num_epochs'], r['tfds_manual_dir'], r['lr_schedule'],
            r['batch_size']) == ('40', '/data', 'burda', '20')
    assert (r['latent_dim'], r.get('top_latent_dim')) == latent_dims


@pytest.mark.parametrize('target, num_samples, latent_dims', [
    ('burda_ablation', '5', ('50', None)),
    ('burda_two_layer_ablation', '1', ('100', '50'))])
def test_make_burda_ablation_changes_one_flag_at_a_time(
    tmp_path, target, num_samples, latent_dims):
  calls = make_calls(tmp_path, target, 'RESULTS_DIR=out')
  *runs, compare = calls
  assert compare[:3] == ['-m', 'experiments.compare', f'--output_dir=out/{target}']
  rows = {r['workdir']: r for r in map(flag_values_of, runs)}
  protocol = ('num_validation', 'output_bias', 'adam_b1', 'adam_eps', 'adam_variant')
  before = {k: rows[f'out/{target}/before'][k] for k in protocol}
  assert before == dict(num_validation='10000', output_bias='zero', adam_b1='0.9',
                        adam_eps='1e-4', adam_variant='standard')
  for change in ('num_validation=400', 'output_bias=data_mean', 'adam_b1=0.99',
                 'adam_eps=5e-6', 'adam_variant=iwae_code'):
    flag, value = change.split('=')
    row = rows[f'out/{target}/{flag}_{value}']
    assert {k: row[k] for k in protocol} == dict(before, **{flag: value})
  # The preset as it is (the flagfile's values only), then with optax's Adam.
  assert not [a for a in runs[6] if a.lstrip('-').split('=')[0] in protocol]
  assert {k: rows[f'out/{target}/preset_with_optax_adam'][k] for k in
          ('adam_variant', 'adam_eps')} == dict(adam_variant='standard',
                                                adam_eps='5e-6')
  for r in rows.values():
    assert (r['objective'], r['num_samples'], r['num_epochs'],
            r['eval_iwae_samples']) == ('iwae', num_samples, '40', '1000')
    assert (r['latent_dim'], r.get('top_latent_dim')) == latent_dims
  assert len(rows) == 8


def test_make_burda_estimators_runs_each_estimator_and_bound(tmp_path):
  calls = make_calls(tmp_path, 'burda_estimators', 'RESULTS_DIR=out',
                     'TFDS_MANUAL_DIR=/data')
  *runs, compare = calls
  assert compare[:3] == ['-m', 'experiments.compare',
                         '--output_dir=out/burda_estimators']
  fields = ('objective', 'num_samples', 'gradient_estimator', 'num_groups',
            'ciwae_beta')
  got = {}
  for call in runs:
    assert call[:3] == ['-m', 'experiments.train',
                        '--flagfile=experiments/flags/burda_table1.flags']
    workdir, = [a for a in call if a.startswith('--workdir=')]
    # Parsed as the binary parses it, at the 40 epochs, and valid.
    config, _ = parse_preset('burda_table1.flags', *(
        a for a in call[3:] if a != workdir and not a.startswith('--tfds')))
    config_lib.validate(config)
    assert config.num_epochs == 40
    assert '--tfds_manual_dir=/data' in call
    got[workdir.split('/')[-1]] = tuple(getattr(config, f) for f in fields)
  assert got == {
      'iwae_k5': ('iwae', 5, 'reparameterized', 1, 0.05),
      'iwae_k5_stl': ('iwae', 5, 'stl', 1, 0.05),
      'iwae_k5_dreg': ('iwae', 5, 'dreg', 1, 0.05),
      'iwae_k50': ('iwae', 50, 'reparameterized', 1, 0.05),
      'iwae_k50_stl': ('iwae', 50, 'stl', 1, 0.05),
      'iwae_k50_dreg': ('iwae', 50, 'dreg', 1, 0.05),
      # pythae's settings: M = 8 groups of K = 8, and beta = 0.05 over the
      # same 64 draws.
      'miwae_m8_k8': ('miwae', 8, 'reparameterized', 8, 0.05),
      'piwae_m8_k8': ('piwae', 8, 'reparameterized', 8, 0.05),
      'ciwae_k64': ('ciwae', 64, 'reparameterized', 1, 0.05),
  }


def test_make_kingma_welling_and_pythae_run_their_presets(tmp_path):
  calls = make_calls(tmp_path, 'kingma_welling', 'pythae', 'RESULTS_DIR=out',
                     'KW_FLAGS=--seeds=0,1', 'PYTHAE_FLAGS=--num_epochs=100')
  kingma_welling, pythae, pythae_nll = map(flag_values_of, calls)
  assert (kingma_welling['module'], kingma_welling['latent_dims'],
          kingma_welling['seeds'], kingma_welling['optimizer'],
          kingma_welling['workdir']) == (
              'experiments.sweep', '3,5,10,20,200', '0,1', 'adagrad',
              'out/kingma_welling')
  assert (pythae['module'], pythae['latent_dim'], pythae['num_epochs'],
          pythae['dataset'], pythae['workdir']) == (
              'experiments.train', '40', '100', 'binarized_mnist',
              'out/pythae_binarized_mnist')
  # Then pythae's NLL estimate of the same run.
  assert pythae_nll == {'module': 'experiments.evaluate', 'iwae_samples': '200',
                        'repeats': '5', 'workdir': 'out/pythae_binarized_mnist'}
