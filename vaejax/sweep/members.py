"""A sweep's flags and members: one (latent_dim, seed) each, in its own folder.

A sweep varies one size: z's (`--latent_dims`), or for two-layer models z_2's
(`--top_latent_dims`, at one size of z); each size is trained with every seed.
"""

import dataclasses
import pathlib

import jax

from vaejax import checks
from vaejax import config as config_lib
from vaejax import files
from vaejax import rundir

SWEEP_FILE = 'sweep.json'


_field = checks.flag_field


@dataclasses.dataclass(frozen=True)
class SweepFlags:
  """The sweep's own flags; every other flag is a `TrainConfig` field."""
  latent_dims: tuple[int, ...] = _field(
      (2, 5, 10, 20, 50, 200), 'Latent sizes of the members (sizes of z); '
      'where not given, the one size of --latent_dim if a preset or the '
      'command line sets it, or if --top_latent_dims is given.')
  top_latent_dims: tuple[int, ...] = _field(
      (), 'Sizes of z_2 of the members: sweeps the top layer of two-layer '
      'models (in place of --top_latent_dim) at one size of z; unset: every '
      'member has --top_latent_dim\'s.')
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


@dataclasses.dataclass(frozen=True)
class Member:
  latent_dim: int
  seed: int
  top_latent_dim: int = 0  # z_2's size where the sweep varies it, else 0

  @property
  def name(self):
    top = f'_top{self.top_latent_dim:03d}' if self.top_latent_dim else ''
    return f'latent{self.latent_dim:03d}{top}_seed{self.seed}'

  @property
  def size(self):
    """The size the sweep varies: z_2's where it varies it, else z's."""
    return self.top_latent_dim or self.latent_dim


def with_preset_size(flags, base, given):
  """`flags`, sweeping `base.latent_dim` alone where --latent_dims was not given.

  That is where --latent_dim was (by a preset such as Burda's, whose z is
  part of the model), or where --top_latent_dims sweeps z_2 at one z.

  Args:
    flags: `SweepFlags`.
    base: the members' shared `TrainConfig`.
    given: `given(name)` says whether flag `--name` was set.
  """
  if given('latent_dims') or not (given('latent_dim') or flags.top_latent_dims):
    return flags
  if base.latent_dim < 1:
    raise config_lib.ConfigError(
        f'--latent_dim must be positive, got {base.latent_dim}')
  return dataclasses.replace(flags, latent_dims=(base.latent_dim,))


def two_layer(base, flags):
  """Whether the members have two stochastic layers."""
  return bool(base.top_latent_dim or flags.top_latent_dims)


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
  if flags.top_latent_dims and min(flags.top_latent_dims) < 1:
    raise config_lib.ConfigError(
        f'--top_latent_dims must be positive sizes, got '
        f'{",".join(map(str, flags.top_latent_dims))}')
  if flags.top_latent_dims and len(flags.latent_dims) > 1:
    raise config_lib.ConfigError(
        f'--top_latent_dims sweeps z_2 at one size of z, got --latent_dims='
        f'{",".join(map(str, flags.latent_dims))}; give one size')
  members = [Member(k, s, t) for k in flags.latent_dims
             for t in flags.top_latent_dims or (0,) for s in flags.seeds]
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
      top_latent_dim=member.top_latent_dim or base.top_latent_dim,
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
  swept = ('latent_dim', 'seed') + (
      ('top_latent_dim',) if flags.top_latent_dims else ())
  description = {
      **rundir.semantic_fields(base, drop=swept),
      'latent_dims': list(flags.latent_dims),
      'seeds': list(flags.seeds),
      'independent_data_order': flags.independent_data_order,
  }
  if flags.top_latent_dims:  # absent from the sweeps of one size of z_2
    description['top_latent_dims'] = list(flags.top_latent_dims)
  path = pathlib.Path(base.workdir) / SWEEP_FILE
  if rundir.record_or_compare(path, description, 'a sweep') is not None:
    # Another --num_epochs: the members go on (or stop earlier), each in
    # its RunDir, which refuses a member that trained more epochs.
    files.write_json(path, {**files.read_json(path), 'num_epochs': base.num_epochs})


def finished(config):
  """Whether the member of `config` has results of its `num_epochs`."""
  path = pathlib.Path(config.workdir) / 'results.json'
  return path.exists() and files.read_json(path)['epochs'] == config.num_epochs
