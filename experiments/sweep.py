r"""Trains one VAE per (latent_dim, seed) as one compiled program, and compares them.

  python -m experiments.sweep --workdir=/tmp/sweep \
      --latent_dims=2,5,10,20,50,200 --seeds=0,1,2 [every train flag]
  python -m experiments.sweep summarize --workdir=/tmp/sweep

Every flag of experiments.train but --latent_dim and --seed applies to all
members. Running the same command again skips finished members and resumes
the others. --shard=i/n splits the members over n independent jobs; run
`summarize` when all are done. With --distributed, each process of a
multi-host job runs this same command (see the README).
"""

from absl import app
from absl import flags
import jax

from vaejax import config as config_lib
from vaejax import sweep
from vaejax import train

PER_MEMBER = ('latent_dim', 'seed')
config_lib.define_flags(config_lib.TrainConfig, exclude=PER_MEMBER)
config_lib.define_flags(sweep.SweepFlags)


def main(argv):
  command = config_lib.start_binary(argv, commands=('summarize',))
  try:
    if command == 'summarize':
      if not flags.FLAGS.workdir:
        raise config_lib.ConfigError('--workdir is required')
      sweep.summarize(flags.FLAGS.workdir)
      return
    sweep_flags = config_lib.from_flags(sweep.SweepFlags)
    base = config_lib.from_flags(config_lib.TrainConfig, exclude=PER_MEMBER)
    sweep.parse_shard(sweep_flags.shard)
    sweep.members_of(sweep_flags)
    if sweep_flags.distributed:
      jax.distributed.initialize(
          coordinator_address=sweep_flags.coordinator_address,
          num_processes=sweep_flags.num_processes,
          process_id=sweep_flags.process_id)
    sweep.run(base, sweep_flags,
              log=print if jax.process_index() == 0 else lambda *_: None)
  except train.USER_ERRORS as e:
    config_lib.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
