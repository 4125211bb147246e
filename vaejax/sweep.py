"""Latent-size sweeps: one VAE per (latent_dim, seed), trained as one program.

Vectorised (the default on GPU and TPU), the members train together: their parameters are
padded to the largest latent size L, stacked, and one jit-compiled epoch
vmaps the training epoch over them. The members share the batches (one data
key) unless `independent_data_order`. A member with latent_dim = k masks its
dimensions k..L-1:

  - the encoder's mean and log-variance there are set to 0: q = N(0, 1) = p,
    so those dimensions add exactly 0 to the KL;
  - z is multiplied by the mask before the decoder, so they feed nothing;
  - hence the weights that read or write them get zero gradients.

A member's weights start as a standalone k-dimensional model's (built with
its seed, then placed into the padded shapes, zeros elsewhere), and
`elbo.reparameterize` draws the same noise for the first k dimensions
whatever L, so a member computes the function of its standalone model, to
float rounding. Each member has its own folder with the files of a train run
(config.json, metrics.jsonl, checkpoints of the unpadded k-dimensional state,
results.json, images): a sweep resumes member by member, `vectorize=False`
trains the same folders one after another, and `experiments.train` with a
member's flags continues any member.

Members are sharded over all devices (a Mesh with one axis); a single member
shards its batch instead. `shard=(i, n)` keeps every n-th member from the
i-th, for independent jobs; `summarize` merges the folders into results.csv,
results.md and plots.
"""

import dataclasses
import itertools
import json
import pathlib
import time

from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from vaejax import config as config_lib
from vaejax import data
from vaejax import files
from vaejax import plots
from vaejax import train

SWEEP_FILE = 'sweep.json'
CSV_COLUMNS = ('latent_dim', 'seed', 'test_elbo', 'test_log_likelihood',
               'test_kl', 'test_nll_iwae', 'active_units', 'iwae_samples',
               'epochs', 'train_seconds')


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
  return dataclasses.replace(
      base, workdir=str(pathlib.Path(base.workdir) / member.name),
      latent_dim=member.latent_dim, seed=member.seed,
      data_seed=member.seed if flags.independent_data_order else base.data_seed)


def run(base, flags, log=print):
  """Trains the sweep's (shard of) members, resuming, then summarizes.

  Args:
    base: the `TrainConfig` shared by the members; its workdir is the sweep's,
      its latent_dim and seed are replaced per member.
    flags: `SweepFlags`.
    log: prints a progress line.

  Returns:
    The summary rows (one dict per finished member).

  Raises:
    config.ConfigError, data.DataError, train.TrainingError: one-line errors;
    the first two before any data is loaded.
  """
  members = members_of(flags)
  shard_index, shard_count = parse_shard(flags.shard)
  configs = [member_config(base, flags, m) for m in members]
  for config in configs:
    config_lib.validate(config)
  vectorize = vectorizes(flags)
  if vectorize and base.checkpoints_to_keep < 2:
    # A kill while the members save leaves them one epoch apart; the sweep
    # resumes all from the earlier epoch, which each must still have.
    raise config_lib.ConfigError('a vectorised sweep needs --checkpoints_to_keep >= 2')
  data.check_available(base.dataset, tfds_data_dir=base.tfds_data_dir,
                       tfds_manual_dir=base.tfds_manual_dir)
  _prepare_sweep_dir(base, flags)
  mine = [c for i, c in enumerate(configs) if i % shard_count == shard_index]
  run_dirs = [train.RunDir(c) for c in mine]
  try:
    todo = [(c, d) for c, d in zip(mine, run_dirs) if d.results() is None]
    log(f'sweep of {len(members)} members; this job: {len(mine)}, '
        f'{len(mine) - len(todo)} already finished')
    if todo:
      for _, run_dir in todo:  # before the data: damaged checkpoints fail fast
        run_dir.verify_latest()
      dataset = data.load(base.dataset, tfds_data_dir=base.tfds_data_dir,
                          tfds_manual_dir=base.tfds_manual_dir)
      if vectorize:
        _train_vectorized([c for c, _ in todo], [d for _, d in todo], dataset,
                          log)
      else:
        for config, run_dir in todo:
          log(f'member {pathlib.Path(config.workdir).name}')
          train.train_loaded(config, dataset, run_dir)
  finally:
    for run_dir in run_dirs:
      run_dir.close()
  if not files.is_primary():
    return None
  if shard_count > 1:
    log(f'shard {shard_index}/{shard_count} done; when every shard is done, '
        'run: python -m experiments.sweep summarize '
        f'--workdir={base.workdir}')
    return None
  return summarize(base.workdir, log=log)


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


def _prepare_sweep_dir(base, flags):
  """Writes sweep.json, or refuses a workdir that holds another sweep."""
  config_lib.ensure_writable(base.workdir)
  description = {
      **config_lib.semantic_fields(base, drop=('latent_dim', 'seed')),
      'latent_dims': list(flags.latent_dims),
      'seeds': list(flags.seeds),
      'independent_data_order': flags.independent_data_order,
  }
  config_lib.record_or_compare(pathlib.Path(base.workdir) / SWEEP_FILE,
                               description, 'a sweep')


# --- Padding a member's latent space. ---


def _latent_axis_pairs(small, large, latent_dim, max_latent_dim):
  """Per axis, (source, destination) slice pairs from `small` into `large` sizes."""
  k, size = latent_dim, max_latent_dim
  if small == large:
    return [(slice(None), slice(None))]
  if (small, large) == (k, size):
    return [(slice(0, k), slice(0, k))]
  if (small, large) == (2 * k, 2 * size):  # [mean; log_var] halves
    return [(slice(0, k), slice(0, k)), (slice(k, 2 * k), slice(size, size + k))]
  raise ValueError(f'cannot pad axis of size {small} to {large} for '
                   f'latent_dim {k} -> {size}')


def _latent_blocks(small_shape, large_shape, latent_dim, max_latent_dim):
  """(small index, large index) pairs of the blocks a k-latent array fills."""
  pairs = [_latent_axis_pairs(s, l, latent_dim, max_latent_dim)
           for s, l in zip(small_shape, large_shape)]
  for combo in itertools.product(*pairs):
    yield tuple(p[0] for p in combo), tuple(p[1] for p in combo)


def embed_latents(tree, like, latent_dim, max_latent_dim):
  """Places a `latent_dim` model's arrays into `max_latent_dim` shapes, zeros elsewhere.

  Works on any tree whose leaves mirror the parameters (the parameters, the
  optimizer state): axes of size k become L, axes of size 2k (the encoder's
  mean and log-variance) become 2L with the halves at 0 and L.
  """

  def place(small, large):
    out = jnp.zeros_like(large)
    for src, dst in _latent_blocks(jnp.shape(small), jnp.shape(large),
                                   latent_dim, max_latent_dim):
      out = out.at[dst].set(jnp.asarray(small)[src])
    return out

  return jax.tree.map(place, tree, like)


def extract_latents(tree, like, latent_dim, max_latent_dim):
  """The inverse of `embed_latents`: a padded tree cut to the shapes of `like`."""

  def cut(large, small):
    out = jnp.zeros_like(small)
    for src, dst in _latent_blocks(jnp.shape(small), jnp.shape(large),
                                   latent_dim, max_latent_dim):
      out = out.at[src].set(jnp.asarray(large)[dst])
    return out

  return jax.tree.map(cut, tree, like)


class MaskedLatents:
  """A model with latent dimensions where `mask` is 0 switched off.

  There the posterior is the prior N(0, 1) (mean 0, log-variance 0: no KL)
  and z is zeroed before the decoder (no input, no gradient).
  """

  def __init__(self, model, mask):
    self.model = model
    self.mask = mask

  def encode(self, x):
    mean, log_var = self.model.encode(x)
    on = self.mask > 0
    return jnp.where(on, mean, 0.0), jnp.where(on, log_var, 0.0)

  def log_likelihood(self, x, z):
    return self.model.log_likelihood(x, z * self.mask)


# --- Devices. ---


def _mesh():
  return jax.sharding.Mesh(np.asarray(jax.devices()), ('devices',))


def _put(tree, sharding):
  """Arrays that every process holds whole -> global arrays with `sharding`.

  Each process provides the shards on its own devices, so this also works
  when the mesh spans several processes (multi-host).
  """

  def put(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)))
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(put, tree)


def _to_host(tree):
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)


class VectorizedMembers:
  """Members as one padded, stacked, sharded state, trained by one program.

  Args:
    configs: the members' configs (the same flags but latent_dim, seed,
      data_seed).
    states: each member's state in its own shapes, {'params', 'opt_state'}
      of host arrays (as `train.initial_state` or a checkpoint gives it).
    dataset: the loaded `data.Dataset`.
  """

  def __init__(self, configs, states, dataset):
    base = configs[0]
    self.configs = configs
    self.max_latent = max(c.latent_dim for c in configs)
    self.steps_per_epoch = len(dataset.train) // base.batch_size
    padded_config = dataclasses.replace(base, latent_dim=self.max_latent)
    graphdef, optimizer, padded_like = train.initial_state(
        padded_config, self.steps_per_epoch)
    self._standalone = states
    self.keys = [train.RunKeys.of(c) for c in configs]

    mesh = _mesh()
    self.num_devices = mesh.devices.size
    # Pad the members to a multiple of the devices with copies of the first;
    # their results are dropped.
    count = -(-len(configs) // self.num_devices) * self.num_devices
    index = list(range(len(configs))) + [0] * (count - len(configs))
    stack = lambda items: jax.tree.map(lambda *a: jnp.stack(a),
                                       *[items[i] for i in index])
    members = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('devices'))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.state = _put(stack([
        embed_latents(state, padded_like, c.latent_dim, self.max_latent)
        for c, state in zip(configs, states)]), members)
    self._mask = _put(stack([
        (jnp.arange(self.max_latent) < c.latent_dim).astype(jnp.float32)
        for c in configs]), members)
    self._run_key = _put(stack([k.run for k in self.keys]), members)
    self._eval_keys = {
        'valid': _put(stack([k.valid for k in self.keys]), members),
        'test': _put(stack([k.test for k in self.keys]), members)}
    independent = len({c.data_seed for c in configs}) > 1
    if independent:
      self._data_key = _put(stack([k.data for k in self.keys]), members)
    else:
      self._data_key = _put(self.keys[0].data, replicated)
    self._train_data = _put(dataset.train, replicated)
    self._eval_x = {
        'valid': _put(train.eval_inputs(dataset.valid, base, 0), replicated),
        'test': _put(train.eval_inputs(dataset.test, base, 1), replicated)}

    model_fn = lambda params, mask: MaskedLatents(nnx.merge(graphdef, params), mask)
    batch_sharding = None
    if count == 1 and self.num_devices > 1 and base.batch_size % self.num_devices == 0:
      batch_sharding = members  # one member: shard its batch
    train_step = train.make_train_step(model_fn, optimizer, base,
                                       self.steps_per_epoch)
    epoch_fn = train.make_train_epoch(train_step, base, self.steps_per_epoch,
                                      batch_sharding=batch_sharding)

    def members_epoch(state, train_data, epoch, run_key, data_key, mask):
      params, opt_state, stats = jax.vmap(
          epoch_fn, in_axes=(0, 0, None, None, 0, 0 if independent else None, 0))(
              state['params'], state['opt_state'], train_data, epoch, run_key,
              data_key, mask)
      return {'params': params, 'opt_state': opt_state}, stats

    compile_start = time.perf_counter()
    self._epoch = jax.jit(members_epoch, donate_argnums=0).lower(
        self.state, self._train_data, jnp.int32(0), self._run_key,
        self._data_key, self._mask).compile()
    self.compile_seconds = time.perf_counter() - compile_start
    self._evaluate = jax.jit(jax.vmap(
        train.make_evaluate(model_fn, base.eval_batch_size),
        in_axes=(0, None, 0, 0)))

  def train_epoch(self, epoch):
    """Trains every member one epoch.

    Returns each member's {'loss', 'finite'} `[steps]` on the host, a list.
    """
    self.state, stats = self._epoch(self.state, self._train_data,
                                    jnp.int32(epoch), self._run_key,
                                    self._data_key, self._mask)
    stats = _to_host(stats)
    return [jax.tree.map(lambda a, m=m: a[m], stats)
            for m in range(len(self.configs))]

  def evaluate(self, split):
    """Mean `ElboTerms` of every member on 'valid' or 'test', stacked, host."""
    terms = self._evaluate(self.state['params'], self._eval_x[split],
                           self._eval_keys[split], self._mask)
    return jax.tree.map(lambda a: a[:len(self.configs)], _to_host(terms))

  def member_states(self):
    """Each member's state in its own shapes, host arrays."""
    host = _to_host(self.state)
    return [jax.tree.map(np.asarray, extract_latents(
        jax.tree.map(lambda a, m=m: a[m], host), like, c.latent_dim,
        self.max_latent))
            for m, (c, like) in enumerate(zip(self.configs, self._standalone))]


def _train_vectorized(configs, run_dirs, dataset, log):
  """Trains `configs` (same flags but latent_dim, seed, data_seed) together."""
  base = configs[0]
  # Each member starts where its own checkpoints are; all resume from the
  # earliest epoch that every member has (a kill while saving leaves them at
  # most one epoch apart, and each keeps its last few checkpoints).
  start_epoch = min(d.latest_epoch() for d in run_dirs)
  steps_per_epoch = len(dataset.train) // base.batch_size
  states = []
  for config, run_dir in zip(configs, run_dirs):
    _, _, state = train.initial_state(config, steps_per_epoch)
    states.append(run_dir.restore(jax.tree.map(np.asarray, state),
                                  epoch=start_epoch)[1])
  members = VectorizedMembers(configs, states, dataset)
  log(f'{len(configs)} members padded to latent_dim {members.max_latent}, on '
      f'{members.num_devices} device(s); compiled in '
      f'{members.compile_seconds:.1f} s')
  if start_epoch:
    log(f'resuming from epoch {start_epoch}')

  progress = train.Progress(base, start_epoch)
  member_states = states
  try:
    for epoch in range(start_epoch, base.num_epochs):
      start = time.perf_counter()
      stats = members.train_epoch(epoch)
      epoch_seconds = time.perf_counter() - start
      for m, config in enumerate(configs):
        train.check_finite(stats[m], epoch,
                           f' in member {pathlib.Path(config.workdir).name}',
                           config.skip_nonfinite_updates)
      valid_terms = members.evaluate('valid')
      test_terms = members.evaluate('test')
      member_states = members.member_states()
      for m, (config, run_dir) in enumerate(zip(configs, run_dirs)):
        pick = lambda tree, m=m: jax.tree.map(lambda a: a[m], tree)
        record = train.epoch_record(config, epoch, stats[m], epoch_seconds,
                                    pick(valid_terms), pick(test_terms),
                                    steps_per_epoch)
        # Host arrays: the same in every process, saved as such (multi-host).
        run_dir.end_epoch(record, member_states[m])
      progress.bar.update(1)
      elbos = ', '.join(f'{c.latent_dim}: {float(test_terms.elbo[m]):.2f}'
                        for m, c in enumerate(configs))
      progress.write(
          f'epoch {epoch + 1}/{base.num_epochs}  {epoch_seconds:.2f} s '
          f'({len(configs) * steps_per_epoch * base.batch_size / epoch_seconds:,.0f} '
          f'member-examples/s)  test ELBO by latent_dim {{{elbos}}}')
  finally:
    progress.close()

  test_inputs = train.eval_inputs(dataset.test, base, 1)
  for m, (config, run_dir) in enumerate(zip(configs, run_dirs)):
    results = train.finish(run_dir, dataset, member_states[m]['params'],
                           test_inputs, members.keys[m],
                           members.compile_seconds)
    log(f'member {pathlib.Path(config.workdir).name}: test ELBO '
        f'{results["test_elbo"]:.3f}, NLL {results["test_nll_iwae"]:.3f} '
        f'(K={results["iwae_samples"]}), active units '
        f'{results["active_units"]}/{config.latent_dim}')


# --- Summaries. ---


def summarize(workdir, log=print):
  """Merges the members' results into results.csv, results.md and plots.

  Returns:
    One dict per finished member, in the sweep's order.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / SWEEP_FILE
  if not path.exists():
    raise config_lib.ConfigError(f'{workdir} holds no sweep ({SWEEP_FILE} is missing)')
  saved = json.loads(path.read_text())
  members = [Member(k, s) for k in saved['latent_dims'] for s in saved['seeds']]
  rows, curves, missing = [], {}, []
  for member in members:
    member_dir = workdir / member.name
    if not (member_dir / 'results.json').exists():
      missing.append(member.name)
      continue
    results = files.read_json(member_dir / 'results.json')
    rows.append({'seed': member.seed, **{k: results.get(k) for k in CSV_COLUMNS
                                         if k != 'seed'}})
    curves[member] = files.read_jsonl(member_dir / 'metrics.jsonl')
  if missing:
    log(f'not finished yet: {", ".join(missing)}')
  _write_csv(workdir / 'results.csv', rows)
  table = results_markdown(rows)
  files.write_atomic(workdir / 'results.md', table)
  if rows:
    plots.plot_bound_curves(workdir / 'bound_vs_examples.png', curves)
    plots.plot_by_latent_dim(workdir / 'nll_and_active_units.png', rows)
    plots.plot_samples_by_latent_dim(
        workdir / 'samples_by_latent_dim.png',
        {m: workdir / m.name / 'samples.png' for m in curves})
  log(table)
  return rows


def _write_csv(path, rows):
  lines = [','.join(CSV_COLUMNS)]
  for row in rows:
    lines.append(','.join('' if row[c] is None else repr(row[c]) if isinstance(
        row[c], float) else str(row[c]) for c in CSV_COLUMNS))
  files.write_atomic(path, '\n'.join(lines) + '\n')


def results_markdown(rows):
  """The members table, and mean +- std over seeds per latent size."""
  lines = ['| latent_dim | seed | test ELBO | test log-likelihood | test KL | '
           'test NLL (IWAE) | active units |',
           '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in rows:
    lines.append(f'| {r["latent_dim"]} | {r["seed"]} | {r["test_elbo"]:.2f} | '
                 f'{r["test_log_likelihood"]:.2f} | {r["test_kl"]:.2f} | '
                 f'{r["test_nll_iwae"]:.2f} | {r["active_units"]} |')
  lines += ['', '| latent_dim | seeds | test ELBO | test NLL (IWAE) | active units |',
            '| ---: | ---: | ---: | ---: | ---: |']
  for latent_dim in sorted({r['latent_dim'] for r in rows}):
    group = [r for r in rows if r['latent_dim'] == latent_dim]
    cells = [_mean_std([r[k] for r in group])
             for k in ('test_elbo', 'test_nll_iwae', 'active_units')]
    lines.append(f'| {latent_dim} | {len(group)} | ' + ' | '.join(cells) + ' |')
  if rows:
    lines.append(f'\nNLL by the importance-weighted bound with K = '
                 f'{rows[0]["iwae_samples"]}; mean +- standard deviation over seeds.')
  return '\n'.join(lines) + '\n'


def _mean_std(values):
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f'{values.mean():.2f}'
  return f'{values.mean():.2f} +- {values.std(ddof=1):.2f}'
