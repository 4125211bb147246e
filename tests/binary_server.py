"""Runs a binary's `main` many times, each in a fork of one loaded process.

  python tests/binary_server.py experiments.train

imports the binary (its flags, vaejax, JAX, Flax; about a second) once, says
how long that took (`{"import_seconds": S}`), then reads requests from stdin, one JSON line each, `{"args": [...], "stdout":
PATH, "stderr": PATH}`: it forks, the child runs the binary as
`python -m experiments.train ARGS` would, with its output in the two files,
and the server answers `{"returncode": N, "seconds": S}` on stdout, S from the
fork to the child's exit. The server itself never starts a JAX backend, so
each child begins as a fresh process after its imports. For the tests of bad
input, which start the binaries dozens of times.
"""

import importlib
import json
import os
import sys
import time
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


def main():
  start = time.perf_counter()
  binary = importlib.import_module(sys.argv[1])
  print(json.dumps({'import_seconds': time.perf_counter() - start}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
      run_child(binary, request['args'], request['stdout'], request['stderr'])
    _, status = os.waitpid(pid, 0)
    print(json.dumps({'returncode': os.waitstatus_to_exitcode(status),
                      'seconds': time.perf_counter() - start}), flush=True)


if __name__ == '__main__':
  main()
