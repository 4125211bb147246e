"""The experiment binaries: absl flags -> vaejax, one line on bad input.

What only a binary may do to its process lives here, not in the library.
"""

import sys

from absl import flags


def define_run_flags(params_help=None):
  """The flags of a binary on a trained run: --workdir, --tfds_data_dir,
  --tfds_manual_dir and, given its help, --params (a string flag)."""
  defined = {
      'workdir': flags.DEFINE_string(
          'workdir', '', 'The run\'s workdir (or a sweep member\'s folder).'),
      'tfds_data_dir': flags.DEFINE_string(
          'tfds_data_dir', None, 'Where TFDS keeps prepared datasets, if not '
          'where the run had them.'),
      'tfds_manual_dir': flags.DEFINE_string(
          'tfds_manual_dir', None, 'The manual-dir root, if not where the run '
          'had it.'),
  }
  if params_help:
    defined['params'] = flags.DEFINE_string('params', 'final', params_help)
  return defined


def run_on_a_run(argv, run_flags, command):
  """A binary's main on a trained run: `command(workdir, tfds_data_dir=,
  tfds_manual_dir=)`, its bad input ended in one line (`exit_with`)."""
  # pylint: disable=g-import-not-at-top  (the library once the flags parsed)
  from vaejax import config as config_lib
  from vaejax import train
  config_lib.start_binary(argv)
  try:
    if not run_flags['workdir'].value:
      raise config_lib.ConfigError('--workdir is required')
    command(run_flags['workdir'].value,
            tfds_data_dir=run_flags['tfds_data_dir'].value,
            tfds_manual_dir=run_flags['tfds_manual_dir'].value)
  except train.USER_ERRORS as e:
    exit_with(e)


# --params of the binaries that load a run with `vaejax.load_run`.
LOAD_RUN_PARAMS_HELP = (
    'Whose parameters: final (those results.json reports), last (the latest '
    'checkpoint\'s) or an epoch number with a checkpoint.')


def exit_with(error):
  """Ends a binary with `error` as its one stderr line, status 1.

  As the process ends: a failed checkpoint read leaves orbax's other reads
  failing in threads and in coroutines that Python reports when it collects
  them at exit; their tracebacks would add to the one line, so from here on
  only the main thread writes to stderr and such reports are dropped. The
  library changes neither (`vaejax.checkpoint` restores stderr on return).
  """
  from vaejax import checkpoint  # pylint: disable=g-import-not-at-top
  sys.stderr = checkpoint.MainThreadOnly(sys.stderr)
  sys.unraisablehook = lambda unraisable: None
  raise SystemExit(f'error: {error}') from None
