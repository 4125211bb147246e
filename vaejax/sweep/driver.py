"""The sweep's driver: its members, trained vectorised or one after another."""

import jax
import numpy as np

from vaejax import config as config_lib
from vaejax import data
from vaejax import files
from vaejax import heads
from vaejax import loop
from vaejax import rundir
from vaejax import step as step_lib
from vaejax import train
from vaejax.sweep import members as members_lib
from vaejax.sweep import summary
from vaejax.sweep import vectorized


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
  members = members_lib.members_of(flags)
  shard_index, shard_count = members_lib.parse_shard(flags.shard)
  configs = [members_lib.member_config(base, flags, m) for m in members]
  for config in configs:
    config_lib.validate(config)
  two_layer = members_lib.two_layer(base, flags)
  if two_layer and flags.vectorize:
    raise config_lib.ConfigError(
        '--vectorize pads the members\' z, which a two-layer model '
        '(--top_latent_dim) feeds to q(z_2|z) and draws from p(z|z_2): its '
        'members train one after another; drop --vectorize')
  pads = heads.posterior_traits(base.posterior).pads
  if flags.vectorize and not pads:
    raise config_lib.ConfigError(
        f'--vectorize pads the members\' z, which --posterior={base.posterior} '
        'cannot pad exactly (its head: vaejax.heads); its members train one '
        'after another: drop --vectorize')
  if (members_lib.vectorizes(flags) and not two_layer
      and not jax.config.jax_threefry_partitionable):
    # Under the other threefry, a draw's bits depend on the shape of the
    # whole draw, so a padded member would not draw its standalone noise.
    raise config_lib.ConfigError(
        'a vectorised sweep equals its members trained alone only with '
        'jax_threefry_partitionable=True (JAX\'s default), which is off: '
        'turn it on (JAX_THREEFRY_PARTITIONABLE=1) or pass --novectorize')
  data.check_available(base.dataset, tfds_data_dir=base.tfds_data_dir,
                       tfds_manual_dir=base.tfds_manual_dir)
  members_lib.prepare_sweep_dir(base, flags)
  mine = [c for i, c in enumerate(configs) if i % shard_count == shard_index]
  # Finished members are left as they are, their folders not even locked.
  unfinished = [c for c in mine if not members_lib.finished(c)]
  run_dirs = []
  try:
    for config in unfinished:  # each locks its folder: a second sweep stops here
      run_dirs.append(rundir.RunDir(config))
    todo = [(c, d) for c, d in zip(unfinished, run_dirs) if d.results() is None]
    log(f'sweep of {len(members)} members; this job: {len(mine)}, '
        f'{len(mine) - len(todo)} already finished')
    if todo:
      for _, run_dir in todo:  # before the data: damaged checkpoints fail fast
        run_dir.verify_latest()
      dataset = data.load(base.dataset, tfds_data_dir=base.tfds_data_dir,
                          tfds_manual_dir=base.tfds_manual_dir,
                          num_validation=base.num_validation)
      if members_lib.vectorizes(flags) and not two_layer and pads:
        _train_vectorized(todo, dataset, log)
      else:
        if members_lib.vectorizes(flags) and not pads:  # the accelerator default
          log(f'--posterior={base.posterior} cannot be padded: its members '
              'train one after another')
        for config, run_dir in todo:
          log(f'member {run_dir.name}')
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
  return summary.summarize(base.workdir, log=log)


def common_epoch(run_dirs):
  """The last epoch that every member has a checkpoint of (0: the start)."""
  earliest = min(d.latest_epoch() for d in run_dirs)
  shared = set.intersection(*(set(d.checkpoint_epochs()) for d in run_dirs))
  return max(e for e in shared if e <= earliest)


def _train_vectorized(todo, dataset, log):
  """Trains the (config, RunDir) pairs of `todo` as one program, resuming.

  The members resume together from the last epoch they all have a
  checkpoint of, so the numbers are those of an uninterrupted run. A member
  that is further on (killed while the members saved, or trained one after
  another before) is rewound to it: its later checkpoints and metrics lines
  are deleted, and those epochs are trained again with the others.
  """
  configs = [c for c, _ in todo]
  run_dirs = [d for _, d in todo]
  start_epoch = common_epoch(run_dirs)
  for run_dir in run_dirs:
    if run_dir.latest_epoch() > start_epoch:
      log(f'member {run_dir.name}: rewound from epoch {run_dir.latest_epoch()} '
          f'to {start_epoch}, the last epoch every member has a checkpoint of')
      run_dir.rewind(start_epoch)
  steps_per_epoch = step_lib.steps_per_epoch(len(dataset.train),
                                             configs[0].batch_size)
  states = []
  for config, run_dir in zip(configs, run_dirs):
    _, _, state = train.initial_state(config, steps_per_epoch, dataset.train)
    states.append(run_dir.restore(jax.tree.map(np.asarray, state))[1])
  members = vectorized.VectorizedMembers(configs, states, dataset)
  log(f'{len(configs)} members padded to latent_dim {members.max_latent}, on '
      f'{members.num_devices} device(s); compiled in '
      f'{members.compile_seconds:.1f} s')
  if start_epoch:
    log(f'resuming from epoch {start_epoch}')
  progress = loop.Progress(configs[0].num_epochs, start_epoch,
                           configs[0].progress)
  try:
    loop.run_epochs(members, run_dirs, start_epoch, progress)
  finally:
    progress.close()
  all_results = loop.finish(members, run_dirs, dataset,
                            [k.samples for k in members.keys])
  for run_dir, results in zip(run_dirs, all_results):
    log(f'member {run_dir.name}: {loop.results_line(results)}')
