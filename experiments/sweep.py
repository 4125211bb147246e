r"""Trains one VAE per (latent_dim, seed) as one compiled program, and compares them.

  python -m experiments.sweep --workdir=/tmp/sweep \
      --latent_dims=2,5,10,20,50,200 --seeds=0,1,2 [every train flag]
  python -m experiments.sweep summarize --workdir=/tmp/sweep
  python -m experiments.sweep --workdir=/tmp/top \
      --flagfile=experiments/flags/burda_table1_two_layer.flags \
      --top_latent_dims=10,20,50 --objective=iwae --num_samples=5

Every flag of experiments.train but --seed applies to all members;
--latent_dims, where given, replaces --latent_dim (where it is not, a
preset's --latent_dim is the one size, swept over --seeds), and
--top_latent_dims replaces --top_latent_dim. Running the same command again
skips finished members and resumes the others. --shard=i/n splits the
members over n independent jobs; run `summarize` when all are done. With
--distributed, each process of a multi-host job runs this same command (see
the README).
"""

from absl import app
from absl import flags
import jax

import experiments
from vaejax import config as config_lib
from vaejax import devices
from vaejax import sweep
from vaejax import train

PER_MEMBER = ('seed',)
config_lib.define_flags(config_lib.TrainConfig, exclude=PER_MEMBER)
config_lib.define_flags(sweep.SweepFlags)
config_lib.define_flags(devices.DistributedFlags)


def main(argv):
  command = config_lib.start_binary(argv, commands=('summarize',))
  try:
    if command == 'summarize':
      if not flags.FLAGS.workdir:
        raise config_lib.ConfigError('--workdir is required')
      sweep.summarize(flags.FLAGS.workdir)
      return
    base = config_lib.from_flags(config_lib.TrainConfig, exclude=PER_MEMBER)
    sweep_flags = sweep.with_preset_size(
        config_lib.from_flags(sweep.SweepFlags), base,
        given=lambda name: flags.FLAGS[name].present)
    sweep.parse_shard(sweep_flags.shard)
    sweep.members_of(sweep_flags)
    devices.initialize(config_lib.from_flags(devices.DistributedFlags))
    sweep.run(base, sweep_flags,
              log=print if jax.process_index() == 0 else lambda *_: None)
  except train.USER_ERRORS as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
