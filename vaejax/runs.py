"""Loading what a run trained: `load_run(workdir)`.

  run = vaejax.load_run('runs/flax_example')
  terms = jax.vmap(lambda x, k: vaejax.elbo(run.model, x, k))(xs, keys)

reads the run's config.json and the parameters of one of its checkpoints,
and nothing else: no optimiser state, no dataset, no lock (a run still
training, or a sweep's member folder, reads as well), and nothing is
written. A missing or damaged workdir or checkpoint is refused in one line
(`config.ConfigError`, `checkpoint.CheckpointError`), as the binaries do.
"""

import dataclasses
import pathlib

from flax import nnx

from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import files

PARAMS = ('final', 'last')


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  """A trained run, loaded.

  Attributes:
    config: its `TrainConfig` (config.json; `workdir` where it was loaded).
    model: the trained model, an `nnx.Module` of the model protocol, ready
      for `vaejax.elbo`, `vaejax.iwae_bound` and the batch helpers
      (`vaejax.encode`, `vaejax.sample`, ...).
    epoch: the epoch whose parameters `model` holds.
    results: results.json, or None for a run that has not finished.
  """
  config: config_lib.TrainConfig
  model: nnx.Module
  epoch: int
  results: dict | None


def parse_params(text):
  """A binary's --params: 'final', 'last' or an epoch number (`load_run`)."""
  if text in PARAMS:
    return text
  try:
    return int(text)
  except ValueError:
    raise config_lib.ConfigError(f'--params must be one of {", ".join(PARAMS)} '
                                 f'or an epoch number, got {text!r}') from None


def read_config(workdir):
  """The `TrainConfig` of the run in `workdir` (its config.json), nothing else."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    raise config_lib.ConfigError(f'{workdir} holds no vaejax run: it has no '
                                 'config.json')
  return config_lib.from_json(path, workdir=str(workdir), progress=False)


def load_run(workdir, params='final'):
  """The model a run trained, from its workdir (module docstring).

  Args:
    workdir: a run's workdir, or a member folder of a sweep.
    params: 'final', the parameters its results.json reports (the last
      epoch's, or with --final_model=best_valid the best validation
      epoch's), for a finished run; 'last', the latest checkpoint's; or an
      epoch number that has a checkpoint.

  Returns:
    A `LoadedRun`.

  Raises:
    config.ConfigError: no run there, or an unknown `params`.
    checkpoint.CheckpointError: the checkpoint is missing, damaged or does
      not restore.
  """
  # pylint: disable=g-import-not-at-top  (the trainer, only when loading)
  from vaejax import step as step_lib
  from vaejax import train
  path = pathlib.Path(workdir)
  config = read_config(workdir)
  if not (params in PARAMS or (isinstance(params, int)
                               and not isinstance(params, bool))):
    raise config_lib.ConfigError(f'params={params!r} is not one of: '
                                 f'{", ".join(PARAMS)}, or an epoch number')
  results = (files.read_json(path / 'results.json')
             if (path / 'results.json').is_file() else None)
  if params == 'final' and results is None:
    raise config_lib.ConfigError(
        f'{workdir} has not finished (no results.json), so it has no final '
        "parameters; load params='last' or an epoch number")
  checkpoints = path / 'checkpoints'
  if not checkpoints.is_dir():
    raise checkpoint.CheckpointError(f'{workdir} has no checkpoints folder')
  reader = checkpoint.Checkpointer(checkpoints, read_only=True)
  try:
    epochs = reader.epochs()
    if not epochs:
      raise checkpoint.CheckpointError(f'{workdir} has no complete checkpoint')
    epoch = params if isinstance(params, int) else epochs[-1]
    if epoch not in epochs:
      raise checkpoint.CheckpointError(
          f'{workdir} has no checkpoint of epoch {epoch}; it has epochs '
          f'{", ".join(map(str, epochs))}')
    best = params == 'final' and config.final_model == 'best_valid'
    name = 'best_params' if best else 'params'
    graphdef, _, shapes = train.state_shapes(
        config, step_lib.steps_per_epoch(config.spec.sizes[0], config.batch_size))
    restored = reader.restore_part(epoch, {name: shapes['params']})[name]
  finally:
    reader.close()
  if best:
    epoch = results['final_epoch']
  return LoadedRun(config, nnx.merge(graphdef, restored), epoch, results)

