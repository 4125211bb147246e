r"""Pictures of a trained run: samples, reconstructions, interpolations, traversals.

  python -m experiments.generate --workdir=RUN [--split=test] [--seed=0]

writes samples.png, reconstructions.png, interpolations.png and
traversals.png, each with an .npz of its arrays, into RUN/generated (or
--output_dir); see vaejax/artifacts.py. The run is read, never changed.
"""

from absl import app
from absl import flags

import experiments
from vaejax import artifacts
from vaejax import config as config_lib
from vaejax import runs

_RUN = experiments.define_run_flags(experiments.LOAD_RUN_PARAMS_HELP)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, f'Where to write; unset: WORKDIR/{artifacts.OUTPUT_FOLDER}.')
_SPLIT = flags.DEFINE_string('split', 'test', 'The examples reconstructed, '
                             'interpolated and traversed: train, valid or test.')
_SEED = flags.DEFINE_integer('seed', 0, 'The seed of every draw.')
config_lib.define_flags(artifacts.GenerateFlags)


def main(argv):
  experiments.run_on_a_run(argv, _RUN, lambda workdir, **data_dirs: (
      artifacts.generate(
          workdir, output_dir=_OUTPUT_DIR.value,
          params=runs.parse_params(_RUN['params'].value), split=_SPLIT.value,
          seed=_SEED.value, flags=config_lib.from_flags(artifacts.GenerateFlags),
          **data_dirs)))

if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
