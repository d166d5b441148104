"""Cervix-region crop: a colour/sharpness heuristic, no learned detector.

Colposcopy photos show the cervix as a large pink-to-red, in-focus region, framed by a black
vignette, a grey/white metal or clear plastic speculum and often blurred vaginal walls. The
heuristic, on a copy downscaled to ``WORK_SIZE`` px:

1. redness = (R - (G + B) / 2) / (max(R, G, B) + 1): about 0.2-0.5 on tissue, ~0 on the grey
   speculum and white reflections; pixels darker than ``MIN_BRIGHTNESS`` (the vignette) are out.
2. tissue mask = redness above the Otsu threshold of the redness of the bright pixels, clipped
   to [``MIN_REDNESS``, ``MAX_REDNESS``]: Otsu adapts to the photo's white balance, the floor keeps
   grey images empty, the ceiling keeps an all-pink photo from being cut down to its blood spots; then
   a morphological opening (drops specks and thin reflections) and hole filling (drops the
   white mucus and glare spots inside the cervix).
3. sharpness = local mean of the gradient magnitude of the grey image: high where in focus.
4. the connected blob with the largest area x mean sharpness wins; its bounding box gets a
   ``MARGIN`` on every side and is grown to a square (shifted to stay inside the image).
5. fallback when no blob covers ``MIN_BLOB_FRACTION`` of the image: the centre square with side
   ``FALLBACK_FRACTION`` of the short side (the photographer centres the cervix).

Boxes are (left, upper, right, lower) in the full image's pixel coordinates, as Pillow's crop takes.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

WORK_SIZE = 96
MIN_BRIGHTNESS = 40
MIN_REDNESS = 0.08
MAX_REDNESS = 0.15
MIN_BLOB_FRACTION = 0.05
MARGIN = 0.08
FALLBACK_FRACTION = 0.8


class CropBox(NamedTuple):
    box: tuple[int, int, int, int]
    found: bool  # False: the centre-crop fallback was used


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """Threshold maximising the between-class variance of a 1-D sample."""
    hist, edges = np.histogram(values, bins=bins)
    if hist.sum() == 0:
        return float("inf")
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def redness_map(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(redness, bright mask) of an (H, W, 3) uint8 image."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(axis=2)
    redness = (r - (g + b) / 2) / (value + 1.0)
    return redness, value >= MIN_BRIGHTNESS


def sharpness_map(rgb: np.ndarray) -> np.ndarray:
    grey = rgb.astype(np.float32).mean(axis=2)
    gx = ndimage.sobel(grey, axis=1)
    gy = ndimage.sobel(grey, axis=0)
    size = max(3, min(grey.shape) // 8)
    return ndimage.uniform_filter(np.hypot(gx, gy), size=size)


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    redness, bright = redness_map(rgb)
    if bright.sum() < 16:
        return np.zeros(redness.shape, dtype=bool)
    threshold = min(max(MIN_REDNESS, otsu_threshold(redness[bright])), MAX_REDNESS)
    mask = bright & (redness > threshold)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool), iterations=2)
    return ndimage.binary_fill_holes(mask)


def square_box(left: float, upper: float, right: float, lower: float, width: int,
               height: int) -> tuple[int, int, int, int]:
    """Grow a box to a square around its centre, as far as the image allows, then shift it inside."""
    side = min(max(right - left, lower - upper), width, height)
    cx, cy = (left + right) / 2, (upper + lower) / 2
    new_left = min(max(cx - side / 2, 0), width - side)
    new_upper = min(max(cy - side / 2, 0), height - side)
    box = (int(round(new_left)), int(round(new_upper)), int(round(new_left + side)), int(round(new_upper + side)))
    return (box[0], box[1], min(box[2], width), min(box[3], height))


def centre_box(width: int, height: int, fraction: float = FALLBACK_FRACTION) -> tuple[int, int, int, int]:
    side = fraction * min(width, height)
    return square_box(width / 2 - side / 2, height / 2 - side / 2, width / 2 + side / 2, height / 2 + side / 2,
                      width, height)


def find_cervix_box(image: Image.Image) -> CropBox:
    """Square box around the cervix region of an RGB image (see the module docstring)."""
    width, height = image.size
    scale = WORK_SIZE / max(width, height)
    small = image if scale >= 1 else image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(small.convert("RGB"))
    sx, sy = width / rgb.shape[1], height / rgb.shape[0]
    mask = tissue_mask(rgb)
    labels, n_blobs = ndimage.label(mask)
    if n_blobs == 0:
        return CropBox(centre_box(width, height), False)
    index = np.arange(1, n_blobs + 1)
    areas = ndimage.sum_labels(mask, labels, index)
    sharp = ndimage.mean(sharpness_map(rgb), labels, index)
    best = int(np.argmax(areas * (sharp + 1e-6)))
    if areas[best] < MIN_BLOB_FRACTION * mask.size:
        return CropBox(centre_box(width, height), False)
    rows, cols = ndimage.find_objects(labels)[best]
    left, right = cols.start * sx, cols.stop * sx
    upper, lower = rows.start * sy, rows.stop * sy
    margin = MARGIN * max(right - left, lower - upper)
    return CropBox(square_box(left - margin, upper - margin, right + margin, lower + margin, width, height), True)
