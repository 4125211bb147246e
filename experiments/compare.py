r"""Finished runs side by side: a markdown table and their learning curves.

  python -m experiments.compare --workdirs=runs/a,runs/b --output_dir=/tmp/cmp

writes results.md (epochs, training hours, test ELBO, test NLL, active
units per run) and learning_curves.png in --output_dir.
"""

from absl import app
from absl import flags

import experiments
from vaejax import compare
from vaejax import config as config_lib

_WORKDIRS = flags.DEFINE_list('workdirs', [], 'Workdirs of finished runs.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', '', 'Where the outputs go.')


def main(argv):
  config_lib.start_binary(argv)
  try:
    if not _WORKDIRS.value or not _OUTPUT_DIR.value:
      raise config_lib.ConfigError('--workdirs and --output_dir are required')
    compare.compare(_WORKDIRS.value, _OUTPUT_DIR.value)
  except config_lib.ConfigError as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
