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
from vaejax import train

_WORKDIR = flags.DEFINE_string('workdir', '', 'The run\'s workdir (or a sweep '
                               'member\'s folder).')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, f'Where to write; unset: WORKDIR/{artifacts.OUTPUT_FOLDER}.')
_PARAMS = flags.DEFINE_string(
    'params', 'final', 'Whose parameters: final (those results.json reports), '
    'last (the latest checkpoint\'s) or an epoch number with a checkpoint.')
_SPLIT = flags.DEFINE_string('split', 'test', 'The examples reconstructed, '
                             'interpolated and traversed: train, valid or test.')
_SEED = flags.DEFINE_integer('seed', 0, 'The seed of every draw.')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'Where TFDS keeps prepared datasets, if not where '
    'the run had them.')
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    'tfds_manual_dir', None, 'The manual-dir root, if not where the run had it.')
config_lib.define_flags(artifacts.GenerateFlags)


def main(argv):
  config_lib.start_binary(argv)
  try:
    if not _WORKDIR.value:
      raise config_lib.ConfigError('--workdir is required')
    artifacts.generate(
        _WORKDIR.value, output_dir=_OUTPUT_DIR.value,
        params=runs.parse_params(_PARAMS.value), split=_SPLIT.value,
        seed=_SEED.value, flags=config_lib.from_flags(artifacts.GenerateFlags),
        tfds_data_dir=_TFDS_DATA_DIR.value,
        tfds_manual_dir=_TFDS_MANUAL_DIR.value)
  except train.USER_ERRORS as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
