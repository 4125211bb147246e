"""One training run: its trainer and `train_and_evaluate`, the driver.

`train_and_evaluate(config)` checks the flags and the data, resumes from the
workdir (`rundir.RunDir`), trains with `SingleRun`, the compiled epoch of
`vaejax.step` for one model, through the epoch loop of `vaejax.loop`, and
writes the final evaluation. The parts live in their own modules: the model
in `models`, the loss in `objectives`, the optimiser in `optim`, the keys in
`rng`, the evaluation programs in `evaluation`.
"""

import dataclasses
import functools
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import data
from vaejax import devices
from vaejax import evaluation
from vaejax import files
from vaejax import loop
from vaejax import models
from vaejax import objectives
from vaejax import optim
from vaejax import rng
from vaejax import rundir
from vaejax import step as step_lib

TrainingError = rundir.TrainingError

# What the binaries report as one `error: ...` line and a non-zero exit.
USER_ERRORS = (config_lib.ConfigError, data.DataError, rundir.TrainingError,
               checkpoint.CheckpointError, files.InUseError)


def initial_state(config, steps_per_epoch, train_x=None):
  """A run's model structure, optimizer and initial state.

  Returns (graphdef, optimizer, {'params', 'opt_state'}), the parameters
  from the run's init key; with `config.output_bias='data_mean'`, the
  decoder's output starts at the mean of the training examples `train_x`.
  """
  model = models.build_model(config, rng.RunKeys.of(config).init)
  if config.output_bias == 'data_mean':
    if train_x is None:
      raise ValueError("output_bias='data_mean' needs the training examples")
    model.set_output_bias(data.input_mean(train_x, pixels=config.spec.pixels))
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optim.build_optimizer(config, steps_per_epoch)
  return graphdef, optimizer, {'params': params,
                               'opt_state': optimizer.init(params)}


def state_shapes(config, steps_per_epoch):
  """(graphdef, optimizer, shapes): `initial_state` with `jax.ShapeDtypeStruct`s.

  Nothing is initialised: for a model that only gives shapes (a sweep's
  padded model), in milliseconds instead of seconds.
  """
  abstract = nnx.eval_shape(lambda: models.build_model(config, jax.random.key(0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  optimizer = optim.build_optimizer(config, steps_per_epoch)
  return graphdef, optimizer, {
      'params': params, 'opt_state': jax.eval_shape(optimizer.init, params)}


def build_train_epoch(config, model_fn, optimizer, steps_per_epoch,
                      batch_sharding=None):
  """`step.make_train_epoch` for `config`'s objective, inputs and sizes."""
  train_step = step_lib.make_train_step(
      model_fn, optimizer, objectives.from_config(config, steps_per_epoch),
      skip_nonfinite=config.skip_nonfinite_updates)
  return step_lib.make_train_epoch(
      train_step, steps_per_epoch=steps_per_epoch,
      batch_size=config.batch_size, preprocess=functools.partial(
          data.to_inputs, pixels=config.spec.pixels,
          dynamic_binarization=config.dynamic_binarization),
      batch_sharding=batch_sharding)


def eval_inputs(x, config, split_index):
  """An evaluation split (0 valid, 1 test) of `config`'s data as model inputs."""
  return data.eval_inputs(x, pixels=config.spec.pixels,
                          dynamic_binarization=config.dynamic_binarization,
                          split_index=split_index)


def first_train_inputs(dataset, config):
  """The training examples that active units are also counted over, as inputs."""
  return eval_inputs(
      dataset.train[:evaluation.ACTIVE_UNIT_TRAIN_EXAMPLES], config, 2)


def _shape_config(config):
  """`config` without what does not change the final program (seeds, paths)."""
  return dataclasses.replace(config, workdir='', seed=0, data_seed=0,
                             tfds_data_dir=None, tfds_manual_dir=None,
                             progress=False)


@functools.lru_cache(maxsize=16)
def _final_program(config, example_sharding):
  graphdef = models.graphdef_of(config)
  return jax.jit(evaluation.make_final_evaluation(
      functools.partial(nnx.merge, graphdef), batch_size=config.eval_batch_size,
      iwae_samples=config.eval_iwae_samples,
      iwae_chunk_size=config.iwae_chunk_size, example_sharding=example_sharding))


def final_program(config, example_sharding=None):
  """The jit-compiled final evaluation of `config`'s model.

  Cached by configuration less seeds and paths, so the members of a sweep
  that share a latent size compile it once. `example_sharding` splits the
  examples over the devices (`evaluation.map_over_examples`).
  """
  return _final_program(_shape_config(config), example_sharding)


def _readable(tree):
  """`tree` as this process can read it: as it is in a single process, whole
  host copies in a multi-process job (`devices.to_host`)."""
  return tree if jax.process_count() == 1 else devices.to_host(tree)


class SingleRun:
  """One model trained by the compiled epoch: a `loop.Trainer` of one member.

  On several devices (all of every process's, `vaejax.devices`), the model
  is replicated, each batch is split over the devices, and so are the
  examples of every evaluation; the figures are those of one device up to
  the order of float sums. A batch that does not divide by the device count
  is computed whole on every device (`batch_sharding` is then None).
  """

  def __init__(self, config, graphdef, optimizer, state, dataset):
    self.configs = [config]
    self.keys = rng.RunKeys.of(config)
    self.steps_per_epoch = step_lib.steps_per_epoch(len(dataset.train),
                                                    config.batch_size)
    mesh = devices.mesh()
    self.num_devices = mesh.devices.size
    self.batch_sharding = devices.batch_sharding(mesh, config.batch_size)
    self._example_sharding = devices.example_sharding(mesh)
    self._replicated = devices.replicated(mesh)
    self._graphdef = graphdef
    self._config = config
    self.set_states([state])
    put = functools.partial(devices.put, sharding=self._replicated)
    self._keys = put({'train': self.keys.train, 'data': self.keys.data,
                      'valid': self.keys.valid, 'test': self.keys.test,
                      'iwae': self.keys.iwae})
    self._train_data = put(dataset.train)
    self.test_inputs = np.asarray(eval_inputs(dataset.test, config, 1))
    self._eval_x = put({'valid': eval_inputs(dataset.valid, config, 0),
                        'test': self.test_inputs,
                        'train': first_train_inputs(dataset, config)})
    model_fn = functools.partial(nnx.merge, graphdef)
    compile_start = time.perf_counter()
    # The compiled epoch; `.as_text()` shows its per-device shapes.
    self.epoch_program = jax.jit(
        build_train_epoch(config, model_fn, optimizer, self.steps_per_epoch,
                          batch_sharding=self.batch_sharding),
        donate_argnums=(0, 1)).lower(
            self._state['params'], self._state['opt_state'], self._train_data,
            jnp.int32(0), self._keys['train'], self._keys['data']).compile()
    self._evaluate = jax.jit(evaluation.make_evaluate(
        model_fn, config.eval_batch_size,
        example_sharding=self._example_sharding))
    self.compile_seconds = time.perf_counter() - compile_start

  def train_epoch(self, epoch):
    params, opt_state, stats = self.epoch_program(
        self._state['params'], self._state['opt_state'], self._train_data,
        jnp.int32(epoch), self._keys['train'], self._keys['data'])
    self._state = {'params': params, 'opt_state': opt_state}
    return [devices.to_host(stats)]

  def evaluate(self, split):
    return [devices.to_host(self._evaluate(
        self._state['params'], self._eval_x[split], self._keys[split]))]

  def states(self):
    return [_readable(self._state)]

  def final_evaluation(self):
    final = final_program(self._config, self._example_sharding)(
        self._state['params'], self._eval_x['test'], self._eval_x['train'],
        self._keys['test'], self._keys['iwae'])
    return [devices.to_host(final)]

  def models(self):
    return [nnx.merge(self._graphdef, _readable(self._state['params']))]

  def set_states(self, states):
    (state,) = states
    self._state = devices.put(state, self._replicated)


def train_and_evaluate(config):
  """Trains the VAE of `config`, resuming from its workdir, and evaluates it.

  Args:
    config: a `TrainConfig`.

  Returns:
    The results dict written to results.json.

  Raises:
    config.ConfigError, data.DataError, checkpoint.CheckpointError: bad
      flags, data or checkpoints, before any training.
    TrainingError: a non-finite step; the last good checkpoint is kept.
  """
  config_lib.validate(config)
  data.check_available(config.dataset, tfds_data_dir=config.tfds_data_dir,
                       tfds_manual_dir=config.tfds_manual_dir)
  run_dir = rundir.RunDir(config)
  try:
    if (results := run_dir.results()) is not None:
      return results
    run_dir.verify_latest()  # before the data: a damaged checkpoint fails fast
    dataset = data.load(config.dataset, tfds_data_dir=config.tfds_data_dir,
                        tfds_manual_dir=config.tfds_manual_dir,
                        num_validation=config.num_validation)
    return train_loaded(config, dataset, run_dir)
  finally:
    run_dir.close()


def train_loaded(config, dataset, run_dir):
  """Trains and evaluates `config` on a loaded dataset in its `RunDir`."""
  steps_per_epoch = step_lib.steps_per_epoch(len(dataset.train),
                                             config.batch_size)
  graphdef, optimizer, state = initial_state(config, steps_per_epoch,
                                             dataset.train)
  start_epoch, state = run_dir.restore(state)
  trainer = SingleRun(config, graphdef, optimizer, state, dataset)
  progress = loop.Progress(config.num_epochs, start_epoch, config.progress)
  try:
    if trainer.num_devices > 1:
      progress.write(devices_line(trainer.num_devices, config.batch_size,
                                  trainer.batch_sharding))
    if start_epoch:
      progress.write(f'resuming from the checkpoint of epoch {start_epoch}')
    loop.run_epochs(trainer, [run_dir], start_epoch, progress)
    progress.write(f'evaluating: test NLL by the importance-weighted bound, '
                   f'K={config.eval_iwae_samples}')
    (results,) = loop.finish(trainer, [run_dir], dataset, [trainer.keys.samples])
    progress.write(loop.results_line(results))
    return results
  finally:
    progress.close()


def devices_line(num_devices, batch_size, batch_sharding):
  """How a run of one model uses `num_devices` devices, in one line."""
  if batch_sharding is None:
    return (f'on {num_devices} devices: a batch of {batch_size} does not '
            f'divide by {num_devices}, so every device computes it whole; '
            'the evaluations split their examples over the devices')
  return (f'on {num_devices} devices: each batch of {batch_size} split into '
          f'{num_devices} of {batch_size // num_devices}, and the evaluations\' '
          'examples too')
