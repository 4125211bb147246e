"""A sweep's flags and members: one (latent_dim, seed) each, in its own folder."""

import dataclasses
import pathlib

import jax

from vaejax import config as config_lib
from vaejax import rundir

SWEEP_FILE = 'sweep.json'


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class SweepFlags:
  """The sweep's own flags; every other flag is a `TrainConfig` field."""
  latent_dims: tuple[int, ...] = _field(
      (2, 5, 10, 20, 50, 200), 'Latent sizes of the members.')
  seeds: tuple[int, ...] = _field((0,), 'Seeds of the members.')
  vectorize: bool | None = _field(
      None, 'Train all members as one vmapped program (else one after '
      'another); unset: vectorise on GPU and TPU, not on CPU, where one '
      'member already keeps every core busy.')
  independent_data_order: bool = _field(
      False, 'Give each member the data order of its own seed (else all '
      'members share --data_seed\'s).')
  shard: str = _field(
      '0/1', 'i/n: train only members i, i+n, i+2n, ... (0 <= i < n), for n '
      'independent jobs; then run `summarize`.')
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


@dataclasses.dataclass(frozen=True)
class Member:
  latent_dim: int
  seed: int

  @property
  def name(self):
    return f'latent{self.latent_dim:03d}_seed{self.seed}'


def parse_shard(text):
  """'i/n' -> (i, n), or a `ConfigError`."""
  try:
    index, count = (int(part) for part in text.split('/'))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise config_lib.ConfigError(
        f'--shard must be i/n with 0 <= i < n, e.g. 0/4, got {text!r}')
  return index, count


def members_of(flags):
  """All members, in order; checks the latent sizes and seeds."""
  if not flags.latent_dims or min(flags.latent_dims) < 1:
    raise config_lib.ConfigError(
        f'--latent_dims must be one or more positive sizes, got '
        f'{",".join(map(str, flags.latent_dims)) or "nothing"}')
  if not flags.seeds or min(flags.seeds) < 0:
    raise config_lib.ConfigError(
        f'--seeds must be one or more seeds >= 0, got '
        f'{",".join(map(str, flags.seeds)) or "nothing"}')
  members = [Member(k, s) for k in flags.latent_dims for s in flags.seeds]
  repeated = sorted({m.name for m in members if members.count(m) > 1})
  if repeated:
    raise config_lib.ConfigError(f'duplicate members: {", ".join(repeated)}; '
                                 'list each latent size and seed once')
  return members


def member_config(base, flags, member):
  """The `TrainConfig` of `member`: its folder, latent size and seed."""
  return dataclasses.replace(
      base, workdir=str(pathlib.Path(base.workdir) / member.name),
      latent_dim=member.latent_dim, seed=member.seed,
      data_seed=member.seed if flags.independent_data_order else base.data_seed)


def vectorizes(flags):
  """Whether the sweep trains its members as one program.

  `flags.vectorize`, or where it is unset, whether JAX's default backend is
  an accelerator. On a CPU a member of the usual sizes (the 784-500-z MLP at
  batch 128) already runs its matmuls on every core, and padding the members
  to one latent size adds work: benchmarks/sweep_throughput.py measured the
  vectorised sweep slower than one member after another there.
  """
  if flags.vectorize is not None:
    return flags.vectorize
  return jax.default_backend() != 'cpu'


def prepare_sweep_dir(base, flags):
  """Writes sweep.json, or refuses a workdir that holds another sweep."""
  rundir.ensure_writable(base.workdir)
  description = {
      **rundir.semantic_fields(base, drop=('latent_dim', 'seed')),
      'latent_dims': list(flags.latent_dims),
      'seeds': list(flags.seeds),
      'independent_data_order': flags.independent_data_order,
  }
  rundir.record_or_compare(pathlib.Path(base.workdir) / SWEEP_FILE,
                           description, 'a sweep')
