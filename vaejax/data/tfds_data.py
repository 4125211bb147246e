"""TFDS datasets: prepared from a manual dir or downloaded, read whole, their splits cached as one NumPy file."""

import contextlib
import importlib.util
import logging
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
import zipfile

import numpy as np

from vaejax.data.registry import DataError
from vaejax.data.registry import Dataset

def check_manual_dir(spec, manual_root):
  manual_dir = pathlib.Path(manual_root) / spec.name
  missing = [f for f in spec.files if not (manual_dir / f).is_file()]
  if missing:
    raise DataError(
        f'dataset {spec.name}: --tfds_manual_dir={manual_root} needs the '
        f'folder {manual_dir} with {", ".join(spec.files)}; missing: '
        f'{", ".join(missing)}')



def _without_opencv_notice(record):
  """False for TFDS's notice that it decodes images with PIL, not OpenCV.

  Every read of an image dataset printed it on stderr; PIL is what vaejax
  uses, on purpose (OpenCV would be one more large dependency).
  """
  return 'OpenCV is not installed' not in record.getMessage()


def load(spec, data_dir, manual_root):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  absl_logger = logging.getLogger('absl')
  if _without_opencv_notice not in absl_logger.filters:
    absl_logger.addFilter(_without_opencv_notice)

  builder = tfds.builder(spec.name, data_dir=data_dir)
  if not builder.is_prepared():
    _prepare(builder, spec, manual_root)
  splits = [s for s in spec.tfds_splits if s is not None]
  labelled = 'label' in builder.info.features.keys()
  names = splits + [f'{s}{_LABELS}' for s in splits if labelled]
  cache = pathlib.Path(builder.data_dir) / SPLITS_CACHE
  arrays = _read_splits_cache(cache, names)
  if arrays is None:
    arrays = {}
    for s in splits:
      arrays[s], labels = _read_split(tfds, spec.name, s, builder.data_dir)
      if labelled:
        arrays[f'{s}{_LABELS}'] = labels
    _write_splits_cache(cache, arrays)
  train_split, valid_split, test_split = spec.tfds_splits

  def three(suffix):  # (train, valid, test) of the images or of the labels
    train, test = arrays[train_split + suffix], arrays[test_split + suffix]
    if valid_split is None:
      return train[:spec.sizes[0]], train[spec.sizes[0]:], test
    return train, arrays[valid_split + suffix], test

  dataset = Dataset(spec, *three(''),
                    labels=three(_LABELS) if labelled else None)
  train, valid, test = dataset.train, dataset.valid, dataset.test
  sizes = tuple(len(x) for x in (train, valid, test))
  if sizes != spec.sizes:
    raise DataError(f'dataset {spec.name}: expected {spec.sizes} examples in '
                    f'train, validation and test, read {sizes}')
  return dataset


# Beside a prepared TFDS dataset (in its version folder), its splits as one
# NumPy file: TFDS decodes its records one example at a time (seconds for
# MNIST's 70,000 images, every run); this file reads in a fraction of a
# second. Written once, atomically; where it cannot be written (a read-only
# data dir) or read, the records are read as before.
SPLITS_CACHE = 'vaejax_splits_v2.npz'  # v2: with the labels
_LABELS = '_labels'  # the cache's name of a split's labels: '<split>_labels'


def _read_splits_cache(path, names):
  """{name: array} of `names` (splits' images and labels) from `path`, or
  None if it is missing, damaged or partial."""
  try:
    with np.load(path, allow_pickle=False) as saved:
      if set(saved.files) != set(names):
        return None
      return {s: saved[s] for s in names}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
    return None


def _write_splits_cache(path, arrays):
  try:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix='.vaejax_splits',
                                     suffix='.npz', delete=False) as f:
      np.savez(f, **arrays)
    os.chmod(f.name, 0o644)  # as the data dir's other files, not 0600
    os.replace(f.name, path)
  except OSError:
    with contextlib.suppress(OSError, NameError):
      os.unlink(f.name)


def _read_split(tfds, name, split, prepared_dir):
  # The version folder's parent's parent is the data dir TFDS was given.
  data_dir = pathlib.Path(prepared_dir).parent.parent
  source = tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False)
  examples = source.__getitems__(range(len(source)))
  images = np.stack([example['image'] for example in examples])
  if 'label' not in examples[0]:
    return images, None
  return images, np.asarray([example['label'] for example in examples], np.int64)


def _prepare(builder, spec, manual_root):
  """Prepares `builder` from the manual dir, or by download if there is none."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  files = ', '.join(spec.files)
  if manual_root:
    check_manual_dir(spec, manual_root)
    manual_dir = pathlib.Path(manual_root) / spec.name
  else:
    manual_dir = None
    try:
      urllib.request.urlopen(
          urllib.request.Request(spec.url, method='HEAD'), timeout=10).close()
    except (urllib.error.URLError, OSError) as e:
      reason = getattr(e, 'reason', e)
      raise DataError(
          f'dataset {spec.name} is not prepared in {builder.data_dir} and '
          f'cannot be downloaded ({reason}): pass --tfds_manual_dir=ROOT with '
          f'ROOT/{spec.name}/ holding {files}') from None
  if importlib.util.find_spec('tensorflow') is None:
    raise DataError(
        f'preparing dataset {spec.name} needs TensorFlow, which is not '
        f"installed: pip install 'vaejax[data]' (or tensorflow-cpu)")
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(
          manual_dir=None if manual_dir is None else str(manual_dir)))
