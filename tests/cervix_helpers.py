"""Shared set-up for the cervix tests: a tiny raw image folder and tiny tensors.

Images are generated with Pillow: a pink disc on a dark background with a class-dependent red
centre (so the models have something to learn), of several sizes, some stored rotated with an
EXIF orientation tag, plus one truncated JPEG that the tensor stage must skip.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from pipelines import config

CLASSES = ["Type_1", "Type_2", "Type_3"]
EXIF_ORIENTATION = 0x0112
# Size of the red centre relative to the disc, per class.
RED_FRACTION = {0: 0.15, 1: 0.35, 2: 0.6}
SIZES = [(48, 40), (64, 64), (40, 56), (72, 54)]


def jpeg_bytes(image: Image.Image, orientation: int | None = None, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kwargs["exif"] = exif
    image.save(buf, format="JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def cervix_like(rng: np.random.Generator, label: int, size: tuple[int, int]) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, (15, 12, 12))
    draw = ImageDraw.Draw(image)
    cx, cy = width / 2 + rng.uniform(-3, 3), height / 2 + rng.uniform(-3, 3)
    r = 0.42 * min(width, height)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(225, 150, 165))
    rr = r * (RED_FRACTION[label] + rng.uniform(-0.05, 0.05))
    draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=(190, 40, 60))
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def make_raw(raw: Path, n_per_class: int = 4, n_test: int = 3, seed: int = 0, corrupt: bool = True,
             excluded_in_manifest: bool = True) -> dict:
    """Write a tiny Kaggle-like raw folder; returns what was written (paths relative to ``raw``)."""
    rng = np.random.default_rng(seed)
    raw = Path(raw)
    written = {"train": [], "test": [], "corrupt": [], "excluded": []}
    k = 0
    for label, cls in enumerate(CLASSES):
        for i in range(n_per_class):
            size = SIZES[k % len(SIZES)]
            orientation = 6 if k % 3 == 0 else None  # stored rotated, shown upright
            image = cervix_like(rng, label, size)
            if orientation == 6:  # store it rotated so that the EXIF transpose restores it
                image = image.transpose(Image.Transpose.ROTATE_90)
            rel = f"train/{cls}/{100 + k}.jpg"
            (raw / rel).parent.mkdir(parents=True, exist_ok=True)
            (raw / rel).write_bytes(jpeg_bytes(image, orientation))
            written["train"].append(rel)
            k += 1
    for i in range(n_test):
        rel = f"test/{i}.jpg"
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(jpeg_bytes(cervix_like(rng, i % 3, SIZES[i % len(SIZES)])))
        written["test"].append(rel)
    if corrupt:
        good = (raw / written["train"][0]).read_bytes()
        rel = "train/Type_2/broken.jpg"  # truncated download, not known to the data stage
        (raw / rel).write_bytes(good[: len(good) // 3])
        written["corrupt"].append(rel)
        rel = "train/Type_3/empty.jpg"  # listed as excluded by the data stage
        (raw / rel).write_bytes(b"")
        written["excluded"].append(rel)
        if excluded_in_manifest:
            manifest = raw.parent / "manifest.json"
            manifest.write_text(json.dumps({"files": {}, "counts": {}, "class_balance": {},
                                            "excluded": written["excluded"]}))
    sub = pd.DataFrame({"image_name": [Path(p).name for p in written["test"]]})
    for cls in CLASSES:
        sub[cls] = 1 / 3
    sub.to_csv(raw / "sample_submission_stg1.csv", index=False)
    return written


def orientation_probe(path: Path, orientation: int | None) -> None:
    """A square JPEG whose stored top half is red and bottom half blue, with an EXIF orientation."""
    array = np.zeros((32, 32, 3), dtype=np.uint8)
    array[:16] = (220, 20, 20)
    array[16:] = (20, 20, 220)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(Image.fromarray(array), orientation))


def tiny_images(n_per_class: int = 6, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images and their labels, learnable from colour."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            images.append(np.asarray(cervix_like(rng, label, (size, size))))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def features_args(source: str = "sample", *extra: str) -> argparse.Namespace:
    from pipelines.__main__ import base_parser
    from pipelines.cervix import features

    parser = base_parser(add_help=False)
    features.add_arguments(parser)
    return parser.parse_args(["features", "--comp", "cervix", "--source", source, *extra])


def train_args(source: str = "sample", *extra: str) -> argparse.Namespace:
    from pipelines.common import train

    return train.parse_args("cervix", ["--source", source, *extra])


def raw_dir(source: str = "sample") -> Path:
    return config.raw_dir("cervix", source)
