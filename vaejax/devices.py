"""Where a run's arrays live: one mesh over every device of every process.

A single run and a sweep's vectorised members train on the same mesh, one
axis over all devices (`jax.devices()`: those of every process in a
multi-host job). One model is replicated and each batch is split over the
devices (data parallelism); the evaluations split their examples the same
way. Host arrays that every process holds whole become global arrays with
`put`, and global arrays come back whole to every process with `to_host`.
"""

import dataclasses

import jax
from jax.experimental import multihost_utils
import numpy as np

from vaejax import checks

P = jax.sharding.PartitionSpec
AXIS = 'devices'


def mesh():
  """The mesh of one axis, `AXIS`, over every device of every process."""
  return jax.sharding.Mesh(np.asarray(jax.devices()), (AXIS,))


def replicated(on):
  """The sharding that keeps a whole copy on each device of mesh `on`."""
  return jax.sharding.NamedSharding(on, P())


def batch_sharding(on, batch_size):
  """A batch's examples split over mesh `on`'s devices, or None.

  None where there is one device, or where `batch_size` does not divide by
  the device count: every device then computes the whole batch.
  """
  count = on.devices.size
  if count == 1 or batch_size % count:
    return None
  return jax.sharding.NamedSharding(on, P(AXIS))


def example_sharding(on):
  """The examples of an evaluation split over mesh `on`'s devices, or None
  for one device (`evaluation.map_over_examples`)."""
  if on.devices.size == 1:
    return None
  return jax.sharding.NamedSharding(on, P(AXIS))


def put(tree, sharding):
  """Arrays that every process holds whole -> global arrays with `sharding`.

  Each process provides the shards on its own devices, so this also works
  when the mesh spans several processes (multi-host). PRNG keys keep their
  type.
  """

  def put_one(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put_one(jax.random.key_data(a)),
                                      impl=jax.random.key_impl(a))
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(put_one, tree)


def to_host(tree):
  """Global arrays -> NumPy arrays, whole in every process."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)


_field = checks.flag_field


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
  """The flags of a multi-host job, shared by experiments.train and .sweep."""
  distributed: bool = _field(
      False, 'Call jax.distributed.initialize() first: one program over the '
      'devices of all processes (multi-host); every process runs the same '
      'command, process 0 writes the files.')
  coordinator_address: str | None = _field(
      None, 'With --distributed, where JAX\'s coordinator listens (host:port); '
      'leave unset where JAX detects the cluster (SLURM, Open MPI, TPU, ...).')
  num_processes: int | None = _field(
      None, 'With --distributed, the number of processes (unset: detected).')
  process_id: int | None = _field(
      None, 'With --distributed, this process\'s index (unset: detected).')


def initialize(flags):
  """`jax.distributed.initialize` where `flags.distributed` asks for it."""
  if flags.distributed:
    jax.distributed.initialize(coordinator_address=flags.coordinator_address,
                               num_processes=flags.num_processes,
                               process_id=flags.process_id)
