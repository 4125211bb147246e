"""Frey Face: 1,965 frames of one face, 28 x 20 grey levels (no TFDS builder).

Read from a manual dir, `<root>/frey_face/frey_face.npz` (arrays train,
valid and test, uint8 `[N, 28, 20]`, as `../shared/data` holds them); else
from a cache in the TFDS data dir, `<data dir>/frey_face/frey_face.npz`;
else downloaded once from the dataset's usual source, Sam Roweis' page
(`frey_rawface.mat`, variable `ff`, uint8 `[560, 1965]`, one column per
frame in row-major 28 x 20 order), its frames checked against their
SHA-256, split and written to that cache. The split: `perm =
numpy.random.default_rng(0).permutation(1965)`, train `perm[:1565]`, valid
`perm[1565:1765]`, test `perm[1765:]` (the sizes of the VampPrior code);
consecutive frames are near-duplicates, so a random split puts near-copies
of test frames in train, as in the papers that use it.
"""

import contextlib
import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
import zipfile

import numpy as np

from vaejax.data.registry import DataError
from vaejax.data.registry import Dataset

NAME = 'frey_face'
FILE = 'frey_face.npz'
URL = 'https://cs.nyu.edu/~roweis/data/frey_rawface.mat'
# SHA-256 of the 1,965 frames as uint8 [1965, 560] in video order (the .mat's
# `ff` transposed): of the pixels, whatever the file's MATLAB container.
FRAMES_SHA256 = '2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78'
NUM_FRAMES, HEIGHT, WIDTH = 1965, 28, 20
SIZES = (1565, 200, 200)
_SPLITS = ('train', 'valid', 'test')


def split(frames):
  """(train, valid, test) `[N, 28, 20]` of the `[1965, 560]` frames."""
  perm = np.random.default_rng(0).permutation(NUM_FRAMES)
  images = frames.reshape(NUM_FRAMES, HEIGHT, WIDTH)
  ends = np.cumsum(SIZES)
  return (images[perm[:ends[0]]], images[perm[ends[0]:ends[1]]],
          images[perm[ends[1]:]])


def frames_of_mat(path):
  """The `[1965, 560]` uint8 frames of a `frey_rawface.mat`, digest-checked."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    ff = scipy.io.loadmat(path)['ff']
  except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(f'dataset {NAME}: {path} is not a readable frey_rawface.mat '
                    f'with a variable ff ({first})') from None
  if ff.shape != (HEIGHT * WIDTH, NUM_FRAMES) or ff.dtype != np.uint8:
    raise DataError(f'dataset {NAME}: ff in {path} is {ff.dtype} {ff.shape}, '
                    f'expected uint8 ({HEIGHT * WIDTH}, {NUM_FRAMES})')
  frames = np.ascontiguousarray(ff.T)
  digest = hashlib.sha256(frames.tobytes()).hexdigest()
  if digest != FRAMES_SHA256:
    raise DataError(f'dataset {NAME}: the frames of {path} have SHA-256 '
                    f'{digest[:16]}..., not {FRAMES_SHA256[:16]}...: not the '
                    'Frey Face data')
  return frames


def _read_npz(path):
  try:
    with np.load(path, allow_pickle=False) as saved:
      arrays = tuple(saved[s] for s in _SPLITS)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(f'dataset {NAME}: {path} is not a readable {FILE} ({first})') from None
  shapes = tuple(a.shape for a in arrays)
  if shapes != tuple((n, HEIGHT, WIDTH) for n in SIZES) or any(
      a.dtype != np.uint8 for a in arrays):
    raise DataError(f'dataset {NAME}: {path} holds {shapes}, expected uint8 '
                    f'train, valid, test of {SIZES} frames of {HEIGHT} x {WIDTH}')
  return arrays


def _write_npz(path, arrays):
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix='.npz',
                                   delete=False) as f:
    np.savez(f, **dict(zip(_SPLITS, arrays)))
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)


def _download(cache):
  """Fetches `URL`, converts it and writes `cache`; the arrays."""
  with tempfile.TemporaryDirectory() as tmp:
    target = pathlib.Path(tmp) / 'frey_rawface.mat'
    try:
      with urllib.request.urlopen(URL, timeout=60) as response:
        target.write_bytes(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
      reason = getattr(e, 'reason', e)
      raise DataError(
          f'dataset {NAME} is not in {cache} and cannot be downloaded from '
          f'{URL} ({reason}): pass --tfds_manual_dir=ROOT with ROOT/{NAME}/{FILE}') from None
    arrays = split(frames_of_mat(target))
  with contextlib.suppress(OSError):  # a read-only data dir: no cache
    _write_npz(cache, arrays)
  return arrays


def load(spec, data_dir, manual_root):
  """The `Dataset` of Frey Face (module docstring)."""
  if manual_root and (path := pathlib.Path(manual_root) / NAME / FILE).is_file():
    arrays = _read_npz(path)
  else:
    data_dir = pathlib.Path(data_dir or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets').expanduser()
    cache = data_dir / NAME / FILE
    arrays = _read_npz(cache) if cache.is_file() else _download(cache)
  return Dataset(spec, *(a[..., None] for a in arrays))
