"""Training checkpoints with orbax: the last few epochs, written atomically.

Orbax writes each checkpoint into a temporary folder and renames it when it is
complete, so a run killed mid-write never leaves a checkpoint that restores
half-written arrays; `latest_epoch` only sees finished ones. After each save
the SHA-256 of the checkpoint's files goes into `checkpoints/sha256.json`;
`verify` compares, so a checkpoint damaged on disk afterwards (truncated,
overwritten) is refused with one line instead of restoring wrong weights.
"""

import hashlib
import json
import pathlib
import sys
import threading

from absl import logging
import jax

from vaejax import files

DIGESTS = 'sha256.json'


class CheckpointError(Exception):
  """A checkpoint that cannot be restored as it was written (one line)."""


class Checkpointer:
  """Saves and restores `{'params', 'opt_state'}` trees keyed by epoch."""

  def __init__(self, directory, max_to_keep=3, *, read_only=False):
    """`read_only`: restores only; nothing is created, saved or deleted."""
    # Imported here, not with vaejax: a binary that refuses its flags answers
    # without loading orbax.
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self._directory = pathlib.Path(directory).absolute()
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0)
      # orbax logs a warning that the folder is read-only, which it is meant to be.
      verbosity = logging.get_verbosity()
      logging.set_verbosity(logging.ERROR)
      try:
        self._manager = ocp.CheckpointManager(self._directory, options=options)
      finally:
        logging.set_verbosity(verbosity)
    else:
      self._manager = ocp.CheckpointManager(
          self._directory, options=ocp.CheckpointManagerOptions(
              max_to_keep=max_to_keep, create=True))

  def latest_epoch(self):
    """The last completed epoch with a checkpoint, or None."""
    return self._manager.latest_step()

  def epochs(self):
    """The epochs with a completed checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def delete_after(self, epoch):
    """Deletes the checkpoints of the epochs after `epoch`, and their digests."""
    for step in self.epochs():
      if step > epoch:
        self._manager.delete(step)
    if files.is_primary():
      files.write_json(self._directory / DIGESTS, {
          k: v for k, v in self._digests().items() if int(k) <= epoch})

  def save(self, epoch, state):
    """Saves `state` as the checkpoint of `epoch` and waits until it is on disk.

    Raises `CheckpointError` if orbax does not save it: orbax skips, without
    an error, an epoch at or below its latest, which would leave a digest
    beside a checkpoint of other weights (or none).
    """
    latest = self._manager.latest_step()
    if latest is not None and epoch <= latest:
      raise CheckpointError(
          f'cannot save the checkpoint of epoch {epoch} in {self._directory}: '
          f'it already holds epoch {latest}')
    if not self._manager.save(epoch, args=self._ocp.args.StandardSave(state)):
      raise CheckpointError(
          f'orbax did not save the checkpoint of epoch {epoch} in {self._directory}')
    self._manager.wait_until_finished()
    if files.is_primary():
      kept = {str(step) for step in self._manager.all_steps()}
      digests = {k: v for k, v in self._digests().items() if k in kept}
      digests[str(epoch)] = self._digest(epoch)
      files.write_json(self._directory / DIGESTS, digests)

  def verify(self, epoch):
    """Raises `CheckpointError` if epoch's files differ from those saved.

    A checkpoint saved without a digest (the run was killed between the two)
    is complete by orbax's atomic rename and passes.
    """
    expected = self._digests().get(str(epoch))
    if expected is not None and self._digest(epoch) != expected:
      raise CheckpointError(
          f'the checkpoint of epoch {epoch} ({self._directory / str(epoch)}) '
          'is damaged: its files differ from those saved; delete that '
          'folder to resume from the checkpoint before it')

  def restore(self, epoch, like):
    """Restores the checkpoint of `epoch` into the structure and dtypes of `like`."""
    return self._restore(epoch, like, partial=False)

  def restore_part(self, epoch, like):
    """Restores only the entries of `like` (e.g. {'params': ...}) from the
    checkpoint of `epoch`; the others (the optimiser state) are not read."""
    return self._restore(epoch, like, partial=True)

  def _restore(self, epoch, like, partial):
    self.verify(epoch)
    abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
    if partial:  # onto the default device, as jax.device_put would
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      args = self._ocp.args.PyTreeRestore(
          abstract, partial_restore=True, restore_args=jax.tree.map(
              lambda a: self._ocp.ArrayRestoreArgs(sharding=device), abstract))
    else:
      args = self._ocp.args.StandardRestore(abstract)
    # While restoring, only the main thread writes to stderr: a failed read
    # leaves TensorStore's other reads calling back into orbax's closed event
    # loop from their own threads, whose tracebacks would print beside the
    # one-line error. Restored on return, failed or not, except in a binary
    # (`quiet_after_a_failed_restore`), which ends at the error: there the
    # threads go on failing until it exits.
    stderr = sys.stderr
    sys.stderr = MainThreadOnly(stderr)
    failed = False
    try:
      restored = self._manager.restore(epoch, args=args)
    except Exception as e:  # orbax and tensorstore raise many kinds
      failed = True
      if _QUIET_AFTER_FAILURE:
        sys.unraisablehook = lambda unraisable: None
      reason = ' '.join(str(e).split())[:300]
      raise CheckpointError(
          f'cannot restore the checkpoint of epoch {epoch} '
          f'({self._directory / str(epoch)}): {type(e).__name__}: {reason}; '
          'delete that folder to resume from the checkpoint before it') from None
    finally:
      if not (failed and _QUIET_AFTER_FAILURE):
        sys.stderr = stderr
    return restored

  def close(self):
    self._manager.close()

  def _digests(self):
    try:
      return json.loads((self._directory / DIGESTS).read_text())
    except (OSError, ValueError):
      return {}

  def _digest(self, epoch):
    """SHA-256 over the names and bytes of the files of epoch's checkpoint."""
    root = self._directory / str(epoch)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
      digest.update(str(path.relative_to(root)).encode() + b'\0')
      digest.update(path.read_bytes())
    return digest.hexdigest()


_QUIET_AFTER_FAILURE = False


def quiet_after_a_failed_restore():
  """For the binaries, which end at a failed restore's one-line error: from
  the failure on, only the main thread writes to stderr and unraisable
  reports are dropped, up to the exit (`experiments.exit_with` keeps it so).
  The library alone leaves the process as it found it."""
  global _QUIET_AFTER_FAILURE
  _QUIET_AFTER_FAILURE = True


class MainThreadOnly:
  """A text stream that passes on the main thread's writes only."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    if threading.current_thread() is threading.main_thread():
      return self._stream.write(text)
    return len(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)
