r"""A finished run's importance-weighted test NLL again, at another K.

  python -m experiments.evaluate --workdir=RUN --iwae_samples=200 --repeats=5

prints each estimate and their mean, and appends them to RUN/evaluations.jsonl
(see vaejax/reevaluate.py). pythae's NLL is the mean of five K = 200
estimates.
"""

from absl import app
from absl import flags

import experiments
from vaejax import config as config_lib
from vaejax import reevaluate
from vaejax import train

_WORKDIR = flags.DEFINE_string('workdir', '', 'The finished run\'s workdir.')
_IWAE_SAMPLES = flags.DEFINE_integer('iwae_samples', 5000, 'K of each estimate.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 1, 'Estimates, each from its own draws; their mean is reported.')
_PARAMS = flags.DEFINE_enum(
    'params', 'final', reevaluate.PARAMS, 'Whose parameters: final, those '
    'results.json reports (the best epoch\'s with --final_model=best_valid); '
    'or last, the last epoch\'s.')
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
    reevaluate.reevaluate(_WORKDIR.value, iwae_samples=_IWAE_SAMPLES.value,
                          repeats=_REPEATS.value, params=_PARAMS.value,
                          tfds_data_dir=_TFDS_DATA_DIR.value,
                          tfds_manual_dir=_TFDS_MANUAL_DIR.value)
  except train.USER_ERRORS as e:
    experiments.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
