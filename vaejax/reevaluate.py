"""A finished run's test NLL again, at another K or with repeated draws.

  python -m experiments.evaluate --workdir=RUN --iwae_samples=200 --repeats=5

estimates the importance-weighted test NLL of the run's final parameters
(those its results.json reports: the last epoch's, or with
--final_model=best_valid the best epoch's; --params=last takes the last
epoch's in either case) `repeats` times with K =
`iwae_samples`, each from its own draws, and appends the figures to the
run's evaluations.jsonl. Repeat 0 draws from the run's own IWAE key, so at
the run's K it gives results.json's figure again. pythae reports the mean of
five K = 200 estimates; results.json holds one K = 5000 estimate.
"""

import functools
import pathlib

from flax import nnx
import jax
import numpy as np

from vaejax import config as config_lib
from vaejax import data
from vaejax import evaluation
from vaejax import files
from vaejax import rng
from vaejax import rundir
from vaejax import step as step_lib
from vaejax import train

EVALUATIONS_FILE = 'evaluations.jsonl'


PARAMS = ('final', 'last')


def reevaluate(workdir, *, iwae_samples, repeats=1, params='final',
               tfds_data_dir=None, tfds_manual_dir=None, log=print):
  """Estimates a finished run's test NLL `repeats` times with K = `iwae_samples`.

  Args:
    workdir: the finished run's workdir.
    iwae_samples: K of each estimate.
    repeats: how many estimates, each from its own draws.
    params: 'final', the parameters results.json reports, or 'last', the last
      epoch's (which differ with --final_model=best_valid).
    tfds_data_dir, tfds_manual_dir: where the data are, if not where the run
      had them.
    log: prints the figures.

  Returns:
    The record appended to the run's evaluations.jsonl: `test_nll_iwae` (the
    mean over repeats), `test_nll_iwae_per_repeat`, `test_nll_iwae_stderr`
    (over the test images, of the mean estimate), `iwae_samples`,
    `repeats`, `params`, `epoch` (whose parameters).

  Raises:
    config.ConfigError, data.DataError, checkpoint.CheckpointError,
    files.InUseError: one-line errors, before any data are loaded.
  """
  if iwae_samples < 1 or repeats < 1:
    raise config_lib.ConfigError(
        f'--iwae_samples and --repeats must be positive, got {iwae_samples} '
        f'and {repeats}')
  if params not in PARAMS:
    raise config_lib.ConfigError(
        f'--params={params!r} is not one of: {", ".join(PARAMS)}')
  path = pathlib.Path(workdir)
  if not (path / 'results.json').exists():
    raise config_lib.ConfigError(
        f'--workdir={workdir} holds no finished run (results.json is missing)')
  overrides = {k: v for k, v in (('tfds_data_dir', tfds_data_dir),
                                 ('tfds_manual_dir', tfds_manual_dir)) if v}
  config = config_lib.from_json(path / 'config.json', workdir=str(path),
                                progress=False, **overrides)
  data.check_available(config.dataset, tfds_data_dir=config.tfds_data_dir,
                       tfds_manual_dir=config.tfds_manual_dir)
  run_dir = rundir.RunDir(config)
  try:
    run_dir.verify_latest()
    dataset = data.load(config.dataset, tfds_data_dir=config.tfds_data_dir,
                        tfds_manual_dir=config.tfds_manual_dir,
                        num_validation=config.num_validation)
    steps_per_epoch = step_lib.steps_per_epoch(len(dataset.train),
                                               config.batch_size)
    graphdef, _, state = train.initial_state(config, steps_per_epoch,
                                             dataset.train)
    _, state = run_dir.restore(state)
    if params == 'final':
      epoch, chosen = run_dir.final_params(state)
    else:
      epoch, chosen = run_dir.latest_epoch(), state['params']
    iwae = jax.jit(evaluation.make_iwae(functools.partial(nnx.merge, graphdef),
                                        iwae_samples, config.iwae_chunk_size))
    test_x = train.eval_inputs(dataset.test, config, 1)
    key = rng.RunKeys.of(config).iwae
    bounds = []
    for repeat in range(repeats):
      repeat_key = key if repeat == 0 else jax.random.fold_in(key, repeat)
      bounds.append(np.asarray(iwae(chosen, test_x, repeat_key), np.float64))
      log(f'repeat {repeat}: test NLL (IWAE, K={iwae_samples}) '
          f'{-bounds[-1].mean():.3f} nats')
    mean_bounds = np.mean(bounds, axis=0)
    record = {
        'iwae_samples': iwae_samples,
        'repeats': repeats,
        'params': params,
        'epoch': epoch,
        'test_nll_iwae': float(-mean_bounds.mean()),
        'test_nll_iwae_stderr': float(mean_bounds.std() / np.sqrt(len(mean_bounds))),
        'test_nll_iwae_per_repeat': [float(-b.mean()) for b in bounds],
    }
    files.append_jsonl(path / EVALUATIONS_FILE, record)
    log(f'test NLL (IWAE, K={iwae_samples}, mean of {repeats}) '
        f'{record["test_nll_iwae"]:.3f} +- {record["test_nll_iwae_stderr"]:.3f} '
        f'nats; appended to {path / EVALUATIONS_FILE}')
    return record
  finally:
    run_dir.close()
