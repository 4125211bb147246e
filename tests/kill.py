"""A run killed at a chosen checkpoint, for the resume tests.

  with kill.at_checkpoint(after=lambda epoch: epoch == 2):
    train.train_and_evaluate(config)

runs the block with `Checkpointer.save` replaced: it raises `Killed` right
after saving the checkpoint for which `after(epoch)` is true, or instead of
saving the one for which `before(epoch)` is, as SIGKILL would at that point;
the block must die there.
"""

import contextlib

import pytest

from vaejax import checkpoint


class Killed(Exception):
  """Stands in for SIGKILL at a chosen point of the run."""


@contextlib.contextmanager
def at_checkpoint(*, after=lambda epoch: False, before=lambda epoch: False):
  original_save = checkpoint.Checkpointer.save

  def save_then_die(self, epoch, state):
    if before(epoch):
      raise Killed
    original_save(self, epoch, state)
    if after(epoch):
      raise Killed

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoint.Checkpointer, 'save', save_then_die)
    with pytest.raises(Killed):
      yield
