r"""Trains one VAE and evaluates it: flags -> TrainConfig -> train_and_evaluate.

  python -m experiments.train --workdir=/tmp/vae \
      --flagfile=experiments/flags/flax_example.flags

Running the same command again resumes from the last checkpoint in --workdir.
Each batch is split over every device; with --distributed, over the devices
of every process of a multi-host job, each process running this same command.
Every flag is a field of vaejax.config.TrainConfig; --helpfull lists them.
"""

from absl import app

import experiments
from vaejax import config as config_lib
from vaejax import devices
from vaejax import train

config_lib.define_flags()
config_lib.define_flags(devices.DistributedFlags)


def main(argv):
  config_lib.start_binary(argv)
  try:
    config = config_lib.from_flags()
    config_lib.validate(config)  # before waiting for the other processes
    devices.initialize(config_lib.from_flags(devices.DistributedFlags))
    train.train_and_evaluate(config)
  except train.USER_ERRORS as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
