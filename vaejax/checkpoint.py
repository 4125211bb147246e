"""Training checkpoints with orbax: the last few epochs, written atomically.

Orbax writes each checkpoint into a temporary folder and renames it when it is
complete, so a run killed mid-write never leaves a checkpoint that restores
half-written arrays; `latest_epoch` only sees finished ones.
"""

import pathlib

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores `{'params', 'opt_state'}` trees keyed by epoch."""

  def __init__(self, directory, max_to_keep=3):
    self._manager = ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_epoch(self):
    """The last completed epoch with a checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, epoch, state):
    """Saves `state` as the checkpoint of `epoch` and waits until it is on disk."""
    self._manager.save(epoch, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, epoch, like):
    """Restores the checkpoint of `epoch` into the structure and dtypes of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

  def close(self):
    self._manager.close()
