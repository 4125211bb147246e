"""What a figure of vaejax.plots shows, read back from its PNG.

  pngs.assert_figure(path, inches=(6.0, 4.0), colours=plots._colors(2))

checks that `path` decodes, has the pixel size of a figure of `inches`
(width, height) saved at vaejax's 120 dpi (so a figure with a panel too
many or too few fails), and draws every one of `colours` (RGB or RGBA in
0..1; a curve missing from the plot fails).
"""

from matplotlib import image as mpl_image
import numpy as np

DPI = 120


def assert_figure(path, inches, colours=()):
  pixels = mpl_image.imread(path)
  width, height = inches
  assert pixels.shape[:2] == (round(height * DPI), round(width * DPI)), (
      path, pixels.shape)
  rgb = pixels[..., :3].reshape(-1, 3)
  for colour in colours:
    distance = np.abs(rgb - np.asarray(colour)[:3]).max(axis=1)
    assert (distance < 0.02).sum() >= 20, (path, colour)  # some line, not a dot
  return pixels
