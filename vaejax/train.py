"""Training and evaluation: one compiled program per epoch, checkpoints, outputs.

An epoch is ONE jit-compiled program: the training set stays on the device and
`jax.lax.scan` runs over its batches. All randomness derives from the run key
by `fold_in`: the data order from the epoch, each step's draws from the global
step, so a resumed run draws exactly the numbers of an uninterrupted one.

A run writes to its workdir: config.json, metrics.jsonl (one line per epoch),
results.json (final test ELBO, IWAE NLL, active units, KL per dimension),
checkpoints/ (orbax, the last few epochs), tensorboard/, and PNG images.
"""

import dataclasses
import functools
import math
import pathlib
import sys
import time
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import data
from vaejax import files
from vaejax import kl as kl_lib
from vaejax import nets
from vaejax import plots
# vaejax.elbo, the module, is shadowed by the function it exports.
from vaejax.elbo import elbo
from vaejax.elbo import iwae_bound
from vaejax.elbo import log_importance_weights
from vaejax.elbo import negative_elbo
from vaejax.elbo import negative_iwae_bound

# Burda et al. (2015): a unit is active when Var_x(E_q[z_u | x]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01

# Evaluation sets of grey-level data under dynamic binarization are binarized
# once, with this fixed key, so that every run is scored on the same bits.
_EVAL_BINARIZATION_SEED = 1234


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the message is one line."""


# What the binaries report as one `error: ...` line and a non-zero exit.
USER_ERRORS = (config_lib.ConfigError, data.DataError, TrainingError,
               checkpoint.CheckpointError)


def build_model(config, key):
  """The VAE of `config`, its parameters initialised from `key`."""
  common = dict(activation=config.activation, kernel_init=config.kernel_init,
                likelihood=config.likelihood,
                gaussian_variance=config.gaussian_variance,
                rngs=nnx.Rngs(params=key))
  shape = config.spec.image_shape
  if config.architecture == 'conv':
    return nets.ConvVAE(shape, config.latent_dim,
                        channels=tuple(config.conv_channels), **common)
  return nets.MLPVAE(shape, config.latent_dim,
                     hidden_dims=tuple(config.hidden_dims), **common)


# Burda et al. (2015): stage i lasts 3^i epochs at 10^(-i/7) times the
# initial learning rate, for i = 0, ..., 7.
BURDA_STAGES = 8


def burda_stage_epochs():
  """The epochs at which the stages of Burda et al.'s schedule end."""
  return [(3 ** (i + 1) - 1) // 2 for i in range(BURDA_STAGES)]


def learning_rate_schedule(config, steps_per_epoch):
  """The learning rate of `config`: a number, or an optax schedule of the step."""
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate,
                                       config.num_epochs * steps_per_epoch)
  if config.lr_schedule in ('burda', 'step'):
    if config.lr_schedule == 'burda':
      epochs, factor = burda_stage_epochs()[:-1], 10 ** (-1 / 7)
    else:
      epochs, factor = config.lr_decay_epochs, config.lr_decay_factor
    # The rate drops from the first step of the epoch after each of `epochs`.
    return optax.piecewise_constant_schedule(
        config.learning_rate,
        {epoch * steps_per_epoch: factor for epoch in epochs})
  return config.learning_rate


def build_optimizer(config, steps_per_epoch):
  """optax optimizer with the learning-rate schedule, weight decay, clipping."""
  learning_rate = learning_rate_schedule(config, steps_per_epoch)
  weight_decay = config.weight_decay
  if weight_decay is None:
    weight_decay = (config_lib.ADAMW_WEIGHT_DECAY if config.optimizer == 'adamw'
                    else 0.0)
  if config.optimizer == 'adagrad':
    optimizer = optax.adagrad(learning_rate)
  elif config.optimizer == 'adamw':
    optimizer = optax.adamw(learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                            eps=config.adam_eps, weight_decay=weight_decay)
  else:
    optimizer = optax.adam(learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                           eps=config.adam_eps)
  if weight_decay > 0 and config.optimizer != 'adamw':
    # The gradient of weight_decay/2 ||params||^2, added to the loss's.
    optimizer = optax.chain(optax.add_decayed_weights(weight_decay), optimizer)
  if config.grad_clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                            optimizer)
  return optimizer


def to_inputs(x, pixels, dynamic_binarization, key):
  """Stored examples -> float32 model inputs.

  Binary pixels become 0./1.; grey levels become x / 255, or, with dynamic
  binarization, a Bernoulli(x / 255) draw from `key`; real values pass.
  """
  if pixels == 'real':
    return x.astype(jnp.float32)
  x = x.astype(jnp.float32)
  if pixels == 'binary':
    return x
  x = x / 255.0
  if dynamic_binarization:
    return jax.random.bernoulli(key, x).astype(jnp.float32)
  return x


def kl_weight(config, step, steps_per_epoch):
  """beta at global `step`, ramped linearly over `kl_warmup_epochs`."""
  warmup_steps = config.kl_warmup_epochs * steps_per_epoch
  if warmup_steps <= 0:
    return jnp.asarray(config.beta, jnp.float32)
  return config.beta * jnp.minimum(1.0, (step + 1) / warmup_steps)


def make_train_step(model_fn, optimizer, config, steps_per_epoch):
  """Builds `train_step(params, opt_state, x, run_key, step, *model_args)`.

  One optimizer step on the float inputs `x` `[B, ...]` for the loss of
  `config.objective` (-ELBO or -L_K), its draws from `fold_in(run_key,
  step)`. `model_fn(params, *model_args)` returns the model (for NNX,
  `nnx.merge` with the graphdef; a sweep adds a latent mask).
  Returns (params, opt_state, {'loss', 'finite'}): `finite` is whether the
  loss and every gradient are finite, computed in the step so that nothing
  waits on the host; with `config.skip_nonfinite_updates` a step that is not
  leaves params and opt_state as they were. A sweep vmaps it over its members.
  """

  def train_step(params, opt_state, x, run_key, step, *model_args):
    beta = kl_weight(config, step, steps_per_epoch)

    def loss_fn(params):
      model = model_fn(params, *model_args)
      key = jax.random.fold_in(run_key, step)
      if config.objective == 'iwae':
        loss, _ = negative_iwae_bound(model, x, key,
                                      num_samples=config.num_samples)
      else:
        loss, _ = negative_elbo(model, x, key, num_samples=config.num_samples,
                                beta=beta, analytic_kl=config.analytic_kl)
      return loss

    loss, grads = jax.value_and_grad(loss_fn)(params)
    finite = jnp.isfinite(loss)
    for grad in jax.tree.leaves(grads):
      finite &= jnp.all(jnp.isfinite(grad))
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if config.skip_nonfinite_updates:
      keep = lambda new, old: jnp.where(finite, new, old)
      new_params = jax.tree.map(keep, new_params, params)
      new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return new_params, new_opt_state, {'loss': loss, 'finite': finite}

  return train_step


def make_train_epoch(train_step, config, steps_per_epoch, batch_sharding=None):
  """Builds `train_epoch(params, opt_state, train_data, epoch, run_key, data_key, *model_args)`.

  One epoch as one program: a `lax.scan` over the batches of the on-device
  training set. The data order (`fold_in(data_key, epoch)`) and the dynamic
  binarization (`fold_in(data_key, step)`) come from `data_key`, so the
  members of a sweep, which share it, see the same batches; everything else
  goes to `train_step`. With `batch_sharding`, each batch is laid out over
  the devices by it (data parallelism). Returns (params, opt_state, the
  steps' {'loss', 'finite'}, each `[steps]`); jit it with params and
  opt_state donated.
  """
  pixels = config.spec.pixels
  batch_size = config.batch_size

  def train_epoch(params, opt_state, train_data, epoch, run_key, data_key,
                  *model_args):
    shuffle_key, binarize_key = jax.random.split(data_key)
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch),
                                   train_data.shape[0])
    batches = order[:steps_per_epoch * batch_size].reshape(
        steps_per_epoch, batch_size)
    steps = epoch * steps_per_epoch + jnp.arange(steps_per_epoch)

    def body(carry, inputs):
      params, opt_state = carry
      indices, step = inputs
      x = to_inputs(jnp.take(train_data, indices, axis=0), pixels,
                    config.dynamic_binarization,
                    jax.random.fold_in(binarize_key, step))
      if batch_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, batch_sharding)
      params, opt_state, stats = train_step(params, opt_state, x, run_key,
                                            step, *model_args)
      return (params, opt_state), stats

    (params, opt_state), stats = jax.lax.scan(
        body, (params, opt_state), (batches, steps))
    return params, opt_state, stats

  return train_epoch


def map_over_examples(fn, num_examples, chunk_size):
  """Runs `fn(indices [chunk])` over equal chunks covering range(num_examples).

  Chunks hold at most `chunk_size` indices and are as equal as they can be,
  so padding is less than one index per chunk: the last chunk repeats the
  last index and the padded results are dropped. Outputs are concatenated
  along their leading axis.
  """
  num_chunks = -(-num_examples // chunk_size)
  chunk_size = -(-num_examples // num_chunks)
  indices = jnp.minimum(jnp.arange(num_chunks * chunk_size), num_examples - 1)
  outputs = jax.lax.map(fn, indices.reshape(num_chunks, chunk_size))
  return jax.tree.map(
      lambda a: a.reshape(-1, *a.shape[2:])[:num_examples], outputs)


def _example_keys(key, indices):
  return jax.vmap(functools.partial(jax.random.fold_in, key))(indices)


def make_evaluate(model_fn, batch_size):
  """`evaluate(params, x, key, *model_args)` -> mean `ElboTerms` over x.

  The ELBO proper (beta = 1) with one draw per example, from
  `fold_in(key, index)`, in batches of `batch_size`.
  """

  def evaluate(params, x, key, *model_args):
    model = model_fn(params, *model_args)

    def chunk(indices):
      return jax.vmap(functools.partial(elbo, model))(
          x[indices], _example_keys(key, indices))

    terms = map_over_examples(chunk, x.shape[0], batch_size)
    return jax.tree.map(jnp.mean, terms)

  return evaluate


def make_iwae(model_fn, num_samples, chunk_size):
  """`iwae(params, x, key, *model_args)` -> `[N]` importance-weighted bounds.

  At most `chunk_size` (examples x samples) log-weights exist at once: K is
  split into chunks combined by a running logaddexp when K > chunk_size, so
  memory is bounded whatever K. When K fits one chunk, each example's bound is
  `elbo.iwae_bound(model, x, key_x, K)` exactly.
  """
  samples_per_chunk = min(num_samples, chunk_size)
  num_sample_chunks = -(-num_samples // samples_per_chunk)
  examples_per_chunk = max(1, chunk_size // samples_per_chunk)

  def one_example(model, x, key):
    if num_sample_chunks == 1:
      return iwae_bound(model, x, key, num_samples)

    def add_chunk(total, c):
      log_w = log_importance_weights(
          model, x, jax.random.fold_in(key, c), samples_per_chunk)
      valid = c * samples_per_chunk + jnp.arange(samples_per_chunk) < num_samples
      log_w = jnp.where(valid, log_w, -jnp.inf)
      return jnp.logaddexp(total, jax.nn.logsumexp(log_w)), None

    start = jnp.asarray(-jnp.inf, x.dtype)
    total, _ = jax.lax.scan(add_chunk, start, jnp.arange(num_sample_chunks))
    return total - math.log(num_samples)

  def iwae(params, x, key, *model_args):
    model = model_fn(params, *model_args)

    def chunk(indices):
      return jax.vmap(functools.partial(one_example, model))(
          x[indices], _example_keys(key, indices))

    return map_over_examples(chunk, x.shape[0], examples_per_chunk)

  return iwae


def make_latent_stats(model_fn, batch_size):
  """`latent_stats(params, x, *model_args)` -> (active units, `[L]` mean KL per dim)."""

  def latent_stats(params, x, *model_args):
    model = model_fn(params, *model_args)
    mean, log_var = map_over_examples(
        lambda indices: jax.vmap(model.encode)(x[indices]), x.shape[0],
        batch_size)
    active = jnp.sum(jnp.var(mean, axis=0) > ACTIVE_UNIT_THRESHOLD)
    per_dim = jax.vmap(jax.vmap(
        lambda m, v: kl_lib.standard_normal_kl(m[None], v[None])))(mean, log_var)
    return active, jnp.mean(per_dim, axis=0)

  return latent_stats


@dataclasses.dataclass
class Progress:
  """A tqdm bar on stderr when it is a terminal; one printed line per epoch."""
  config: config_lib.TrainConfig
  start_epoch: int

  def __post_init__(self):
    enabled = (self.config.progress and sys.stderr.isatty()
               and files.is_primary())
    self.bar = tqdm.tqdm(total=self.config.num_epochs, initial=self.start_epoch,
                         unit='epoch', file=sys.stderr, disable=not enabled,
                         dynamic_ncols=True)

  def update(self, record):
    self.bar.set_postfix(loss=f'{record["train_loss"]:.2f}',
                         valid_elbo=f'{record["valid_elbo"]:.2f}')
    self.bar.update(1)
    line = (f'epoch {record["epoch"]}/{self.config.num_epochs}  '
            f'train_loss {record["train_loss"]:.3f}  '
            f'valid_elbo {record["valid_elbo"]:.3f}  '
            f'test_elbo {record["test_elbo"]:.3f}  '
            f'{record["epoch_seconds"]:.2f} s '
            f'({record["examples_per_second"]:,.0f} examples/s)')
    self.write(line)

  def write(self, line):
    if not files.is_primary():
      return
    if self.bar.disable:
      print(line, flush=True)
    else:
      tqdm.tqdm.write(line, file=sys.stderr)

  def close(self):
    self.bar.close()


def eval_inputs(x, config, split_index):
  """An evaluation split as float32 model inputs on the device.

  Grey levels under dynamic binarization are binarized once, with a fixed key
  per split, the same for every run.
  """
  key = jax.random.fold_in(jax.random.key(_EVAL_BINARIZATION_SEED), split_index)
  return jax.jit(to_inputs, static_argnums=(1, 2))(
      jnp.asarray(x), config.spec.pixels, config.dynamic_binarization, key)


@dataclasses.dataclass(frozen=True)
class RunKeys:
  """Every key of a run: from `seed`, except `data` from `data_seed`."""
  model: jax.Array
  run: jax.Array
  data: jax.Array
  valid: jax.Array
  test: jax.Array
  iwae: jax.Array

  @classmethod
  def of(cls, config):
    model_key, run_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    valid_key, test_key, iwae_key = jax.random.split(eval_key, 3)
    return cls(model_key, run_key, jax.random.key(config.data_seed), valid_key,
               test_key, iwae_key)


class RunDir:
  """The files of one run in its workdir, and resuming from them.

  config.json (checked against the config, or written), metrics.jsonl,
  checkpoints/, tensorboard/, results.json and the PNG images.
  """

  def __init__(self, config):
    config_lib.prepare_workdir(config)
    self.config = config
    self.path = pathlib.Path(config.workdir)
    self.metrics_path = self.path / 'metrics.jsonl'
    self.results_path = self.path / 'results.json'
    self._checkpointer = checkpoint.Checkpointer(self.path / 'checkpoints',
                                                 config.checkpoints_to_keep)
    self._writer = None

  def results(self):
    """The finished run's results, or None."""
    if self.results_path.exists():
      return files.read_json(self.results_path)
    return None

  def latest_epoch(self):
    return self._checkpointer.latest_epoch() or 0

  def verify_latest(self):
    """Raises `checkpoint.CheckpointError` if the latest checkpoint is damaged."""
    if epoch := self.latest_epoch():
      self._checkpointer.verify(epoch)

  def restore(self, state, epoch=None):
    """(epoch, state) from the checkpoint of `epoch` (default: the latest).

    Epoch 0 means no checkpoint: `state` is returned as it is. Metrics lines
    of later epochs (a run killed between a line and its checkpoint) are
    dropped: those epochs run again and write them again.
    """
    epoch = self.latest_epoch() if epoch is None else epoch
    if epoch:
      state = self._checkpointer.restore(epoch, state)
    records = [r for r in files.read_jsonl(self.metrics_path) if r['epoch'] <= epoch]
    files.write_jsonl(self.metrics_path, records)
    return epoch, state

  def end_epoch(self, record, state):
    """Appends the epoch's metrics, then checkpoints `state`."""
    files.append_jsonl(self.metrics_path, record)
    if files.is_primary():
      if self._writer is None:
        self._writer = _tensorboard_writer(self.path)
      for name, value in record.items():
        if name != 'epoch':
          self._writer.add_scalar(name, value, global_step=record['epoch'])
      self._writer.flush()
    self._checkpointer.save(record['epoch'], state)  # by every process

  def close(self):
    if self._writer is not None:
      self._writer.close()
    self._checkpointer.close()


def _tensorboard_writer(workdir):
  import tensorboardX  # pylint: disable=g-import-not-at-top
  return tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))


def check_finite(stats, epoch, where, skip):
  """Raises `TrainingError` if a step of the epoch was not finite.

  `stats` is the epoch's {'loss', 'finite'} on the host. Unless `skip`
  (--skip_nonfinite_updates, where such steps were skipped), the error names
  the epoch and the first such step; with it, only an epoch none of whose
  steps was finite stops the run.
  """
  finite = np.asarray(stats['finite'])
  kept = f'the last good checkpoint (epoch {epoch or "none"}) is kept'
  if skip and not finite.any():
    raise TrainingError(f'no step of epoch {epoch + 1}{where} had a finite '
                        f'loss and gradients: training stopped; {kept}')
  if not skip and not finite.all():
    bad_step = int(np.argmin(finite)) + 1
    raise TrainingError(
        f'non-finite loss or gradients at epoch {epoch + 1}, step {bad_step} '
        f'of {len(finite)}{where}: training stopped; {kept} '
        '(--skip_nonfinite_updates skips such steps instead)')


def epoch_record(config, epoch, stats, epoch_seconds, valid_terms, test_terms,
                 steps_per_epoch):
  """The metrics.jsonl line of `epoch` (0-based) as a dict.

  `stats`: the epoch's {'loss', 'finite'} on the host; train_loss is the mean
  over the finite steps, skipped_updates counts the others.
  """
  examples_per_epoch = steps_per_epoch * config.batch_size
  finite = np.asarray(stats['finite'])
  record = {
      'epoch': epoch + 1,
      'examples_seen': (epoch + 1) * examples_per_epoch,
      'train_loss': float(np.mean(np.asarray(stats['loss'])[finite])),
      'skipped_updates': int(np.sum(~finite)),
      'beta': float(kl_weight(config, (epoch + 1) * steps_per_epoch - 1,
                              steps_per_epoch)),
      'epoch_seconds': epoch_seconds,
      'examples_per_second': examples_per_epoch / epoch_seconds,
  }
  for split, terms in (('valid', valid_terms), ('test', test_terms)):
    record[f'{split}_elbo'] = float(terms.elbo)
    record[f'{split}_log_likelihood'] = float(terms.log_likelihood)
    record[f'{split}_kl'] = float(terms.kl)
  return record


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
  run_dir = RunDir(config)
  try:
    if (results := run_dir.results()) is not None:
      return results
    run_dir.verify_latest()  # before the data: a damaged checkpoint fails fast
    dataset = data.load(config.dataset, tfds_data_dir=config.tfds_data_dir,
                        tfds_manual_dir=config.tfds_manual_dir)
    return train_loaded(config, dataset, run_dir)
  finally:
    run_dir.close()


def initial_state(config, steps_per_epoch):
  """A run's model structure, optimizer and initial state.

  Returns (graphdef, optimizer, {'params', 'opt_state'}), the parameters
  from the run's model key.
  """
  graphdef, params = nnx.split(build_model(config, RunKeys.of(config).model),
                               nnx.Param)
  optimizer = build_optimizer(config, steps_per_epoch)
  return graphdef, optimizer, {'params': params,
                               'opt_state': optimizer.init(params)}


def train_loaded(config, dataset, run_dir):
  """Trains and evaluates `config` on a loaded dataset in its `RunDir`."""
  keys = RunKeys.of(config)
  steps_per_epoch = len(dataset.train) // config.batch_size
  graphdef, optimizer, state = initial_state(config, steps_per_epoch)
  model_fn = functools.partial(nnx.merge, graphdef)
  start_epoch, state = run_dir.restore(state)
  params, opt_state = state['params'], state['opt_state']

  train_data = jax.device_put(dataset.train)
  valid_x = eval_inputs(dataset.valid, config, 0)
  test_x = eval_inputs(dataset.test, config, 1)
  compile_start = time.perf_counter()
  train_step = make_train_step(model_fn, optimizer, config, steps_per_epoch)
  train_epoch = jax.jit(
      make_train_epoch(train_step, config, steps_per_epoch),
      donate_argnums=(0, 1)).lower(
          params, opt_state, train_data, jnp.int32(0), keys.run,
          keys.data).compile()
  evaluate = jax.jit(make_evaluate(model_fn, config.eval_batch_size))
  compile_seconds = time.perf_counter() - compile_start

  progress = Progress(config, start_epoch)
  if start_epoch:
    progress.write(f'resuming from the checkpoint of epoch {start_epoch}')
  try:
    for epoch in range(start_epoch, config.num_epochs):
      start = time.perf_counter()
      params, opt_state, stats = train_epoch(
          params, opt_state, train_data, jnp.int32(epoch), keys.run, keys.data)
      stats = jax.tree.map(np.asarray, stats)
      epoch_seconds = time.perf_counter() - start
      check_finite(stats, epoch, '', config.skip_nonfinite_updates)
      record = epoch_record(
          config, epoch, stats, epoch_seconds,
          evaluate(params, valid_x, keys.valid),
          evaluate(params, test_x, keys.test), steps_per_epoch)
      run_dir.end_epoch(record, {'params': params, 'opt_state': opt_state})
      progress.update(record)
    progress.write(f'evaluating: test NLL by the importance-weighted bound, '
                   f'K={config.eval_iwae_samples}')
    results = finish(run_dir, dataset, params, test_x, keys, compile_seconds)
    progress.write(
        f'test ELBO {results["test_elbo"]:.3f} nats, test NLL (IWAE, '
        f'K={results["iwae_samples"]}) {results["test_nll_iwae"]:.3f} nats, '
        f'active units {results["active_units"]}/{config.latent_dim}')
    return results
  finally:
    progress.close()


def finish(run_dir, dataset, params, test_x, keys, compile_seconds):
  """Final evaluation, images and results.json of a trained run."""
  config = run_dir.config
  programs = final_programs(_shape_config(config))
  terms = programs.evaluate(params, test_x, keys.test)
  bounds = np.asarray(programs.iwae(params, test_x, keys.iwae), np.float64)
  active, kl_per_dim = programs.latent_stats(params, test_x)
  results = {
      'epochs': config.num_epochs,
      'latent_dim': config.latent_dim,
      'test_elbo': float(terms.elbo),
      'test_log_likelihood': float(terms.log_likelihood),
      'test_kl': float(terms.kl),
      'test_nll_iwae': float(-bounds.mean()),
      'test_nll_iwae_stderr': float(bounds.std() / np.sqrt(len(bounds))),
      'iwae_samples': config.eval_iwae_samples,
      'active_units': int(active),
      'kl_per_dim': [float(v) for v in kl_per_dim],
  }
  if dataset.test_log_marginal is not None:
    results['test_nll_true'] = float(-np.mean(dataset.test_log_marginal))
  results['compile_seconds'] = compile_seconds
  records = files.read_jsonl(run_dir.metrics_path)
  results['train_seconds'] = sum(r['epoch_seconds'] for r in records)
  _save_images(config, dataset, programs, params, test_x, run_dir.path)
  files.write_json(run_dir.results_path, results)
  return results


def _shape_config(config):
  """`config` without what does not change the final programs (seeds, paths)."""
  return dataclasses.replace(config, workdir='', seed=0, data_seed=0,
                             tfds_data_dir=None, tfds_manual_dir=None,
                             progress=False)


@functools.lru_cache(maxsize=16)
def final_programs(config):
  """The jit-compiled final evaluation of `config`'s model.

  Cached by configuration, so the members of a sweep that share a latent size
  compile these programs once.
  """
  graphdef = nnx.split(build_model(config, jax.random.key(0)), nnx.Param)[0]
  model_fn = functools.partial(nnx.merge, graphdef)

  def reconstruct(params, x):
    model = model_fn(params)
    return jax.vmap(lambda x: model.mean_image(model.encode(x)[0]))(x)

  def decode_means(params, z):
    return jax.vmap(model_fn(params).mean_image)(z)

  return types.SimpleNamespace(
      evaluate=jax.jit(make_evaluate(model_fn, config.eval_batch_size)),
      iwae=jax.jit(make_iwae(model_fn, config.eval_iwae_samples,
                             config.iwae_chunk_size)),
      latent_stats=jax.jit(make_latent_stats(model_fn, config.eval_batch_size)),
      reconstruct=jax.jit(reconstruct),
      decode_means=jax.jit(decode_means))


def _save_images(config, dataset, programs, params, test_x, workdir):
  if not files.is_primary():
    return
  if config.spec.pixels == 'real':
    value_range = (float(dataset.test.min()), float(dataset.test.max()))
  else:
    value_range = (0.0, 1.0)
  save = functools.partial(plots.save_grid, value_range=value_range)
  originals = test_x[:16]
  save(workdir / 'reconstructions.png',
       jnp.concatenate([originals, programs.reconstruct(params, originals)]),
       num_cols=16)
  sample_key = jax.random.fold_in(jax.random.key(config.seed), 7)
  z = jax.random.normal(sample_key, (64, config.latent_dim))
  save(workdir / 'samples.png', programs.decode_means(params, z), num_cols=8)
  if config.latent_dim == 2:
    save(workdir / 'manifold.png',
         programs.decode_means(params, plots.manifold_latents(20)), num_cols=20)
