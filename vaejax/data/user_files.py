"""A user's own data: a `.npz` file of train, valid and test arrays, its pixels read from its values."""

import functools
import os
import zipfile

import numpy as np

from vaejax.data.registry import DataError
from vaejax.data.registry import Dataset
from vaejax.data.registry import DatasetSpec

_SPLITS = ('train', 'valid', 'test')


def read_file(path):
  """The `Dataset` of a user's `.npz` file; `DataError` (one line) if unfit."""
  try:
    stat = os.stat(path)
  except OSError as e:
    raise DataError(f'dataset {path}: cannot read it ({e.strerror})') from None
  return _read_file_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_file_cached(path, mtime_ns, size):
  del mtime_ns, size  # Cache keys only: a rewritten file is read again.
  where = f'dataset {path}'
  if not zipfile.is_zipfile(path):
    raise DataError(f'{where}: not a .npz file (write one with np.savez(path, '
                    'train=..., valid=..., test=...))')
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [s for s in _SPLITS if s not in npz.files]
      if missing:
        raise DataError(f'{where}: needs the arrays train, valid and test '
                        f'(np.savez(path, train=..., valid=..., test=...)); '
                        f'it has: {", ".join(npz.files) or "none"}')
      arrays = {s: npz[s] for s in _SPLITS}
      labels = _labels_of(where, npz, arrays)
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Not a zip, a truncated one, pickled objects: whatever NumPy says.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(f'{where}: not a readable .npz file ({first_line})') from None
  shapes = {}
  for split, x in arrays.items():
    if x.ndim == 3:
      x = arrays[split] = x[..., None]
    if x.ndim != 4 or len(x) == 0 or 0 in x.shape:
      raise DataError(f'{where}, split {split}: expected examples [N>0, H, W] '
                      f'or [N>0, H, W, C], got shape {x.shape}')
    shapes[split] = x.shape[1:]
  if len(set(shapes.values())) > 1:
    raise DataError(f'{where}: the splits\' examples differ in shape: ' + ', '.join(
        f'{s} {shapes[s]}' for s in _SPLITS))
  pixels = _pixels_of(where, arrays)
  stored = {'binary': np.uint8, 'grey': np.uint8, 'real': np.float32}[pixels]
  spec = DatasetSpec(path, pixels, tuple(int(d) for d in shapes['train']),
                     tuple(len(arrays[s]) for s in _SPLITS))
  return Dataset(spec, *(arrays[s].astype(stored) for s in _SPLITS),
                 labels=labels)


def _labels_of(where, npz, arrays):
  """(train, valid, test) labels from `<split>_labels`, all three or none."""
  names = [f'{s}_labels' for s in _SPLITS]
  given = [n for n in names if n in npz.files]
  if not given:
    return None
  if len(given) < 3:
    raise DataError(f'{where}: has {", ".join(given)} but not '
                    f'{", ".join(n for n in names if n not in given)}; give the '
                    'labels of all three splits or of none')
  labels = []
  for split, name in zip(_SPLITS, names):
    y = npz[name]
    if y.shape != (len(arrays[split]),) or y.dtype.kind not in 'biu':
      raise DataError(f'{where}: {name} must be [{len(arrays[split])}] integers '
                      f'(one per example of {split}), got {y.dtype} {y.shape}')
    labels.append(y.astype(np.int64))
  return tuple(labels)


def _pixels_of(where, arrays):
  """'binary', 'grey' or 'real' for the values of all three splits."""
  kinds = {s: x.dtype.kind for s, x in arrays.items()}
  if any(k not in 'biuf' for k in kinds.values()):
    raise DataError(f'{where}: expected numbers, got dtypes ' + ', '.join(
        f'{s} {x.dtype}' for s, x in arrays.items()))
  floats = {k == 'f' for k in kinds.values()}
  if len(floats) > 1:
    raise DataError(f'{where}: the splits mix integer and float values (' + ', '.join(
        f'{s} {x.dtype}' for s, x in arrays.items()) + '); store all three alike')
  if all(np.isin(x, (0, 1)).all() for x in arrays.values()):
    return 'binary'
  if floats == {True}:
    for split, x in arrays.items():
      if not np.isfinite(x).all():
        raise DataError(f'{where}, split {split}: expected finite values, '
                        'found NaN or infinity')
    return 'real'
  for split, x in arrays.items():
    if x.min() < 0 or x.max() > 255:
      raise DataError(
          f'{where}, split {split}: integer values must be binary (0, 1) or '
          f'grey levels 0..255, found {x.min()}..{x.max()}; store real values '
          'as floats')
  return 'grey'
