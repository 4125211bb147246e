"""The experiment binaries: absl flags -> vaejax, one line on bad input.

What only a binary may do to its process lives here, not in the library.
"""

import sys


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
