"""Runs a binary's `main` many times, each in a fork of one loaded process.

  python tests/binary_server.py experiments.train

imports the binary (its flags, vaejax, JAX, Flax; about a second) once, says
the CPU time that took (`{"import_cpu_seconds": S}`), then reads requests
from stdin, one JSON line each, `{"args": [...], "stdout": PATH, "stderr":
PATH}`: it forks, the child runs the binary as `python -m experiments.train
ARGS` would, with its output in the two files, and the server answers
`{"returncode": N, "cpu_seconds": S}` on stdout, S the child's CPU time (user
and system): unlike wall time, not stretched by other processes' load. The server itself never starts a JAX backend, so
each child begins as a fresh process after its imports. For the tests of bad
input, which start the binaries dozens of times.
"""

import importlib
import json
import os
import resource
import sys
import traceback


def run_child(binary, args, stdout, stderr):
  """In the forked child: the binary's `main` under absl, then exit."""
  # pylint: disable=g-import-not-at-top
  from absl import app

  from vaejax import config as config_lib

  for fd, path in ((1, stdout), (2, stderr)):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
  code = 1
  try:
    app.run(binary.main, argv=[binary.__name__, *args],
            flags_parser=config_lib.parse_flags)
    code = 0
  except SystemExit as e:
    if isinstance(e.code, str):  # what the interpreter prints for an uncaught one
      print(e.code, file=sys.stderr)
    code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def cpu_seconds(usage):
  return usage.ru_utime + usage.ru_stime


def main():
  binary = importlib.import_module(sys.argv[1])
  import_seconds = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
  print(json.dumps({'import_cpu_seconds': import_seconds}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      run_child(binary, request['args'], request['stdout'], request['stderr'])
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps({'returncode': os.waitstatus_to_exitcode(status),
                      'cpu_seconds': cpu_seconds(usage)}), flush=True)


if __name__ == '__main__':
  main()
