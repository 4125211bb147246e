"""Small file helpers: atomic writes and JSON-lines metrics.

In a multi-process JAX job (several hosts, one program) every process runs
the same code, and only process 0 writes: the writers here do nothing in the
others.
"""

import json
import os
import pathlib

import jax


def is_primary():
  """True in a single-process run, and in process 0 of a multi-process job."""
  return jax.process_index() == 0


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
