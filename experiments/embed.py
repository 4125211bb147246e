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

_RUN = experiments.define_run_flags(experiments.LOAD_RUN_PARAMS_HELP)
_SPLIT = flags.DEFINE_string('split', 'test', 'The examples embedded: train, '
                             'valid or test.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, f'Where to write; unset: WORKDIR/{artifacts.OUTPUT_FOLDER}.')


def main(argv):
  experiments.run_on_a_run(argv, _RUN, lambda workdir, **data_dirs: (
      artifacts.embed(workdir, split=_SPLIT.value, output_dir=_OUTPUT_DIR.value,
                      params=runs.parse_params(_RUN['params'].value),
                      **data_dirs)))

if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
