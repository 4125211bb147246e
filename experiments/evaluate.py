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

_RUN = experiments.define_run_flags()
_IWAE_SAMPLES = flags.DEFINE_integer('iwae_samples', 5000, 'K of each estimate.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 1, 'Estimates, each from its own draws; their mean is reported.')
_PARAMS = flags.DEFINE_enum(
    'params', 'final', reevaluate.PARAMS, 'Whose parameters: final, those '
    'results.json reports (the best epoch\'s with --final_model=best_valid); '
    'or last, the last epoch\'s.')


def main(argv):
  experiments.run_on_a_run(argv, _RUN, lambda workdir, **data_dirs: (
      reevaluate.reevaluate(workdir, iwae_samples=_IWAE_SAMPLES.value,
                            repeats=_REPEATS.value, params=_PARAMS.value,
                            **data_dirs)))

if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
