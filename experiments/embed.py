r"""Every example's posterior of a trained run, and a scatter plot of the means.

  python -m experiments.embed --workdir=RUN --split=test

writes embeddings_test.npz (the posterior's arrays per example: mean and
log_var for the diagonal Gaussian; labels where the dataset has them) and
embeddings_test.png (the means, or their first two principal components,
coloured by label) into RUN/generated (or --output_dir); see
vaejax/artifacts.py. The run is read, never changed.
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
_SPLIT = flags.DEFINE_string('split', 'test', 'The examples embedded: train, '
                             'valid or test.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, f'Where to write; unset: WORKDIR/{artifacts.OUTPUT_FOLDER}.')
_PARAMS = flags.DEFINE_string(
    'params', 'final', 'Whose parameters: final (those results.json reports), '
    'last (the latest checkpoint\'s) or an epoch number with a checkpoint.')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'Where TFDS keeps prepared datasets, if not where '
    'the run had them.')
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    'tfds_manual_dir', None, 'The manual-dir root, if not where the run had it.')


def main(argv):
  config_lib.start_binary(argv)
  try:
    if not _WORKDIR.value:
      raise config_lib.ConfigError('--workdir is required')
    artifacts.embed(_WORKDIR.value, split=_SPLIT.value,
                    output_dir=_OUTPUT_DIR.value,
                    params=runs.parse_params(_PARAMS.value),
                    tfds_data_dir=_TFDS_DATA_DIR.value,
                    tfds_manual_dir=_TFDS_MANUAL_DIR.value)
  except train.USER_ERRORS as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
