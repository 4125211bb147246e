"""A run's directory: config.json, metrics.jsonl, checkpoints, TensorBoard, results.

  .lock            held while a run uses the workdir (`files.WorkdirLock`)
  config.json      every flag; a workdir holding other flags is refused
  metrics.jsonl    one line per epoch (`epoch_record`)
  checkpoints/     orbax, the last few epochs (`vaejax.checkpoint`); with
                   --final_model=best_valid each also holds the parameters
                   of the best validation ELBO so far, 'best_params'
  tensorboard/     the metrics as scalars
  results.json     the final figures; its presence means the run is finished

Resuming restores the latest checkpoint and drops metrics lines of later
epochs (a run killed between a line and its checkpoint), which run again.
"""

import json
import pathlib
import tempfile

import jax
import numpy as np

from vaejax import checkpoint
from vaejax import config as config_lib
from vaejax import files
from vaejax import optim


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the message is one line."""


class RunDir:
  """The files of one run in its workdir, and resuming from them."""

  def __init__(self, config):
    ensure_writable(config.workdir)
    # Held until `close`: a second run in this workdir stops at once.
    self._lock = files.WorkdirLock(config.workdir)
    self.config = config
    self.path = pathlib.Path(config.workdir)
    self.name = self.path.name
    self.metrics_path = self.path / 'metrics.jsonl'
    self.results_path = self.path / 'results.json'
    try:
      saved_epochs = prepare_workdir(config)
      self._checkpointer = checkpoint.Checkpointer(self.path / 'checkpoints',
                                                   config.checkpoints_to_keep)
      if saved_epochs is not None:
        self._change_num_epochs()
    except Exception:
      self._lock.release()
      raise
    self._writer = None
    # --final_model=best_valid: the epoch of the best validation ELBO so
    # far, that ELBO, and its parameters (host arrays).
    self._keeps_best = config.final_model == 'best_valid'
    self._best = (0, -np.inf, None)

  def _change_num_epochs(self):
    """Makes the run one of `config.num_epochs` (another count, `prepare_workdir`).

    A finished run goes on from its last checkpoint, its final epoch; its
    results.json is kept as results_<epochs>_epochs.json. A run that trained
    more epochs than the new count is refused.
    """
    trained = self.latest_epoch()
    wanted = self.config.num_epochs
    if trained > wanted:
      self._checkpointer.close()
      raise config_lib.ConfigError(
          f'--workdir={self.path} has trained {trained} epochs, more than '
          f'--num_epochs={wanted}; give --num_epochs={trained} or more, or use '
          'a new --workdir')
    results = self.results()
    if results is not None and files.is_primary():
      self.results_path.rename(
          self.path / f'results_{results["epochs"]}_epochs.json')
    saved = files.read_json(self.path / 'config.json')
    files.write_json(self.path / 'config.json', {**saved, 'num_epochs': wanted})

  def results(self):
    """The finished run's results, or None."""
    if self.results_path.exists():
      return files.read_json(self.results_path)
    return None

  def latest_epoch(self):
    return self._checkpointer.latest_epoch() or 0

  def checkpoint_epochs(self):
    """The epochs with a checkpoint, and 0 (the start), ascending."""
    return [0, *self._checkpointer.epochs()]

  def rewind(self, epoch):
    """Makes `epoch` the latest: later checkpoints and metrics lines are deleted.

    `epoch` must be 0 or have a checkpoint. A vectorised sweep rewinds a
    member that is ahead of the others, so that all train as one program.
    """
    self._checkpointer.delete_after(epoch)
    files.write_jsonl(self.metrics_path, [
        r for r in files.read_jsonl(self.metrics_path) if r['epoch'] <= epoch])

  def verify_latest(self):
    """Raises `checkpoint.CheckpointError` if the latest checkpoint is damaged."""
    if epoch := self.latest_epoch():
      self._checkpointer.verify(epoch)

  def restore(self, state):
    """(epoch, state) from the latest checkpoint.

    Epoch 0 means no checkpoint: `state` is returned as it is. Metrics lines
    of later epochs (a run killed between a line and its checkpoint) are
    dropped: those epochs run again and write them again.
    """
    epoch = self.latest_epoch()
    records = [r for r in files.read_jsonl(self.metrics_path) if r['epoch'] <= epoch]
    if epoch and self._keeps_best:
      restored = self._checkpointer.restore(
          epoch, {**state, 'best_params': state['params']})
      # The first epoch of the highest finite validation ELBO, as `end_epoch`
      # chose it (NaN is not ordered: `max` over it would depend on order).
      finite = [r for r in records if np.isfinite(r['valid_elbo'])]
      best = max(finite, key=lambda r: r['valid_elbo'], default=None)
      best_params = restored.pop('best_params')
      if best is not None:
        self._best = (best['epoch'], best['valid_elbo'], best_params)
      elif records:  # every epoch so far NaN: none chosen yet
        self._best = (0, -np.inf, None)
      else:  # no metrics line survived: only the checkpoint's own
        self._best = (epoch, -np.inf, best_params)
      state = restored
    elif epoch:
      state = self._checkpointer.restore(epoch, state)
    files.write_jsonl(self.metrics_path, records)
    return epoch, state

  def final_params(self, state):
    """(epoch, parameters) for the final evaluation, `state` the last epoch's.

    The last epoch's, or with --final_model=best_valid those of the epoch
    with the highest finite validation ELBO (the first, where several tie).

    Raises:
      TrainingError: with best_valid, if no epoch's validation ELBO was finite.
    """
    if self._keeps_best:
      if self._best[2] is None:
        raise TrainingError(
            f'--final_model=best_valid: no epoch of {self.config.num_epochs} '
            f'had a finite validation ELBO, so none can be chosen; the '
            f'checkpoints in {self.path} are kept')
      return self._best[0], self._best[2]
    return self.latest_epoch(), state['params']

  def end_epoch(self, record, state):
    """Appends the epoch's metrics, then checkpoints `state`.

    Every `checkpoint_every` epochs and at the last; a run killed between
    checkpoints resumes from the last one (`restore`).
    """
    files.append_jsonl(self.metrics_path, record)
    if files.is_primary():
      if self._writer is None:
        self._writer = _tensorboard_writer(self.path)
      for name, value in record.items():
        if name == 'epoch':
          continue
        if isinstance(value, list):  # per stochastic layer: one curve each
          for layer, v in enumerate(value, 1):
            self._writer.add_scalar(f'{name}/{layer}', v, global_step=record['epoch'])
        else:
          self._writer.add_scalar(name, value, global_step=record['epoch'])
      self._writer.flush()
    if self._keeps_best:
      valid = record['valid_elbo']
      if np.isfinite(valid) and valid > self._best[1]:
        params = jax.tree.map(np.array, state['params'])  # a copy: the
        # trainer's arrays may be donated to its next epoch
        self._best = (record['epoch'], valid, params)
      # Until a finite epoch, the checkpoint's best_params slot holds the
      # epoch's own (`restore` knows from the metrics that none is chosen).
      best_params = state['params'] if self._best[2] is None else self._best[2]
      state = {**state, 'best_params': best_params}
    epoch = record['epoch']
    if epoch % self.config.checkpoint_every == 0 or epoch == self.config.num_epochs:
      self._checkpointer.save(epoch, state)  # by every process

  def metrics(self):
    return files.read_jsonl(self.metrics_path)

  def write_results(self, results):
    files.write_json(self.results_path, results)

  def close(self):
    if self._writer is not None:
      self._writer.close()
    self._checkpointer.close()
    self._lock.release()


def _tensorboard_writer(workdir):
  import tensorboardX  # pylint: disable=g-import-not-at-top
  return tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))


def check_finite(stats, epoch, where, skip, checkpoint_epoch):
  """Raises `TrainingError` if a step of the epoch was not finite.

  `stats` is the epoch's {'loss', 'finite'} on the host, `epoch` 0-based,
  `checkpoint_epoch` the run's latest checkpoint (0: none). Unless `skip`
  (--skip_nonfinite_updates, where such steps were skipped), the error names
  the epoch and the first such step; with it, only an epoch none of whose
  steps was finite stops the run.
  """
  finite = np.asarray(stats['finite'])
  kept = f'the last good checkpoint (epoch {checkpoint_epoch or "none"}) is kept'
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
      'beta': float(optim.kl_weight(config, (epoch + 1) * steps_per_epoch - 1,
                                    steps_per_epoch)),
      'epoch_seconds': epoch_seconds,
      'examples_per_second': examples_per_epoch / epoch_seconds,
  }
  for split, terms in (('valid', valid_terms), ('test', test_terms)):
    record[f'{split}_elbo'] = float(terms.elbo)
    record[f'{split}_log_likelihood'] = float(terms.log_likelihood)
    record[f'{split}_kl'] = float(terms.kl)
    if terms.kl_per_layer is not None:  # several stochastic layers
      record[f'{split}_kl_per_layer'] = [float(v) for v in terms.kl_per_layer]
  return record


# --- The workdir and its config.json. ---


def ensure_writable(workdir):
  """Creates `workdir` and checks that files can be written in it."""
  try:
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
      pass
  except OSError as e:
    raise config_lib.ConfigError(f'--workdir={workdir} is not writable: '
                      f'{e.strerror or e}') from None


def semantic_fields(config, drop=()):
  """The config as a dict without the fields that do not change results."""
  return {k: v for k, v in json.loads(config_lib.to_json(config)).items()
          if k not in config_lib.NON_SEMANTIC_FIELDS and k not in drop}


def field_defaults():
  """Every `TrainConfig` field's default, as config.json holds it."""
  return json.loads(config_lib.to_json(config_lib.TrainConfig()))


def record_or_compare(path, description, what, ignore=()):
  """Writes the dict `description` as JSON at `path`, or checks the saved one.

  Keys in `ignore` are not compared; a `TrainConfig` field missing from the
  saved file (written before the field existed) counts as its default.
  Raises `ConfigError` naming every other key whose saved value differs: the
  workdir holds `what` with other flags. `num_epochs` may differ
  (`check_num_epochs`): returns the saved one where it does, else None; the
  caller rewrites the file once it knows the run can go on.
  """
  path = pathlib.Path(path)
  if not path.exists():
    files.write_json(path, description)
    return None
  try:
    saved = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise config_lib.ConfigError(f'{path} is unreadable ({e}); use a new --workdir') from None
  saved = {**{k: v for k, v in field_defaults().items() if k in description},
           **saved}
  differing = sorted(k for k in set(saved) | set(description)
                     if k not in ignore and saved.get(k) != description.get(k))
  saved_epochs = None
  if 'num_epochs' in differing and len(differing) == 1:
    saved_epochs = saved['num_epochs']
    check_num_epochs(path.parent, what, saved_epochs, description)
    differing = []
  if differing:
    changes = ', '.join(f'--{k} ({saved.get(k)!r} there, {description.get(k)!r} now)'
                        for k in differing)
    raise config_lib.ConfigError(f'--workdir={path.parent} holds {what} with other flags: '
                      f'{changes}; use a new --workdir')
  return saved_epochs


def check_num_epochs(workdir, what, saved_epochs, description):
  """Refuses, in one line, a new `num_epochs` for a run whose schedule needs it.

  Another --num_epochs continues a run (or trains fewer of its epochs) where
  the epochs already trained do not depend on it: the data order, the draws
  and the KL warm-up are functions of the epoch and the step, and so is the
  learning rate of the constant, step and Burda schedules. The cosine
  schedule decays over all `num_epochs * steps` steps, so its epochs would
  differ.
  """
  if description.get('lr_schedule') == 'cosine':
    raise config_lib.ConfigError(
        f'--workdir={workdir} holds {what} of --num_epochs={saved_epochs} under '
        '--lr_schedule=cosine, which decays the learning rate over all epochs: '
        f'its epochs are not those of a {description["num_epochs"]}-epoch run, '
        'so it cannot go on to another --num_epochs; use a new --workdir')


def prepare_workdir(config):
  """Creates the workdir, checks it is writable and holds no other run.

  Writes config.json (every field) for a new run. A workdir whose config.json
  differs from `config` in a field that changes results is refused, naming
  the fields; but for `num_epochs` (`check_num_epochs`), whose saved value
  is returned (else None) for `RunDir` to go on from.
  """
  ensure_writable(config.workdir)
  return record_or_compare(pathlib.Path(config.workdir) / 'config.json',
                           json.loads(config_lib.to_json(config)), 'a run',
                           ignore=config_lib.NON_SEMANTIC_FIELDS)
