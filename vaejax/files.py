"""Small file helpers: atomic writes and JSON-lines metrics.

In a multi-process JAX job (several hosts, one program) every process runs
the same code, and only process 0 writes: the writers here do nothing in the
others.
"""

import fcntl
import json
import os
import pathlib
import socket

import jax


def is_primary():
  """True in a single-process run, and in process 0 of a multi-process job."""
  return jax.process_index() == 0


class InUseError(RuntimeError):
  """A workdir is held by another process; the message is one line."""


class WorkdirLock:
  """An exclusive lock on a workdir, held until `release` or the process ends.

  `fcntl.flock` on `<workdir>/.lock`: the kernel releases it when the
  holder exits, however it ends (SIGKILL included), so a killed run leaves
  no stale lock and its rerun resumes. While held, the file names the
  holder (process id and host), for the message of a process refused; it
  is emptied on release. Only process 0 of a multi-process job locks.
  """

  def __init__(self, workdir):
    self._file = None
    if not is_primary():
      return
    path = pathlib.Path(workdir) / '.lock'
    lock_file = open(path, 'a+')
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock_file.seek(0)
      holder = lock_file.read().strip() or 'another process'
      lock_file.close()
      raise InUseError(f'--workdir={workdir} is in use by {holder}: wait for '
                       'it to end, or use another --workdir') from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f'process {os.getpid()} on {socket.gethostname()}')
    lock_file.flush()
    self._file = lock_file

  def release(self):
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()
      self._file.close()  # closing releases the lock
      self._file = None


def write_atomic(path, text):
  """Writes `text` to `path` through a temporary file and a rename."""
  if not is_primary():
    return
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.tmp')
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path, obj):
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_jsonl(path):
  """The JSON objects of a JSON-lines file; [] if it does not exist.

  A last line cut short by a crash (no newline, not valid JSON) is ignored.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines(keepends=True):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if line.endswith('\n'):
        raise
  return records


def write_jsonl(path, records):
  write_atomic(path, ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records))


def append_jsonl(path, record):
  if not is_primary():
    return
  with open(path, 'a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())


def read_json(path):
  return json.loads(pathlib.Path(path).read_text())
