"""Cervix tensor stage: every image decoded once into uint8 arrays on disk.

    data/cervix/<source>/features/
        train_<S>.npy       (N, S, S, 3) uint8, RGB, one row per usable train image
        test_<S>.npy        (M, S, S, 3) uint8 (M may be 0)
        train_labels.npy    (N,) int8: 0, 1, 2 for Type_1, Type_2, Type_3
        train_names.json    raw-relative paths, e.g. "train/Type_1/0.jpg" (the OOF ids)
        test_names.json     file names, e.g. "0.jpg" (the submission's image_name)
        folds.npy           (N,) stratified fold ids (pipelines.common.cv.make_folds)
        features.lock.json  stage cache: inputs, parameters, skipped files, timings

Per image: Pillow decode with ``Image.draft`` (the JPEG decoder downscales by 1/2..1/8 while
decoding, so 4128x3096 originals cost about as much as the 512-px copies), EXIF orientation
applied (``ImageOps.exif_transpose``), optionally cropped to the cervix region
(``pipelines.cervix.crop``), then made square and resized to S:

    --fit crop   (default) scale the short side to S and cut the centre square; the photographer
                 centres the cervix, so a 4:3 photo loses only side margins (speculum, vignette)
    --fit pad    scale the long side to S and centre it on black: nothing is lost, at the cost
                 of resolution and black bars

Images listed as corrupt in the data stage's manifest (``"excluded"``) are skipped unread; any
other image that fails to decode is skipped with a warning. Both are reported in the log and in
the lock file. Decoding runs in a thread pool (Pillow releases the GIL while decoding and
resizing) and writes straight into a memory-mapped .npy, renamed into place when complete.
"""
from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from pipelines import config
from pipelines.cervix.crop import find_cervix_box
from pipelines.common.cv import make_folds
from pipelines.common.io import atomic_path, read_json, save_npy, write_json
from pipelines.common.log import StageError
from pipelines.common.stage import Stage, check_current

log = logging.getLogger(__name__)

CLASS_NAMES = ["Type_1", "Type_2", "Type_3"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
DEFAULT_IMAGE_SIZE = 128
LOCK_NAME = "features.lock.json"
# Pillow's errors for unreadable, truncated or hostile files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Tensors:
    """The tensor stage's outputs, loaded (images memory-mapped)."""

    x_train: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    train_names: list[str]
    x_test: np.ndarray
    test_names: list[str]
    image_size: int
    lock_path: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix features")
    g.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                   help=f"side of the square arrays in pixels (default {DEFAULT_IMAGE_SIZE})")
    g.add_argument("--crop", action=argparse.BooleanOptionalAction, default=False,
                   help="crop each photo to the cervix region first (colour/sharpness heuristic; default off)")
    g.add_argument("--fit", choices=("crop", "pad"), default="crop",
                   help="how a non-square image becomes square: centre crop (default) or centre pad")
    g.add_argument("--use-additional", action="store_true",
                   help="also train on raw/additional/Type_k/*.jpg (Kaggle's additional images)")
    g.add_argument("--n-folds", type=int, default=config.N_FOLDS, help=f"CV folds (default {config.N_FOLDS})")
    g.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per core)")
    g.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")


# ---------------------------------------------------------------------------------------------
# listing


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_train_images(raw: Path, use_additional: bool) -> list[tuple[str, int]]:
    """(raw-relative path, label) of every train image, sorted, from train/ (and additional/)."""
    roots = ["train"] + (["additional"] if use_additional else [])
    out = []
    for root in roots:
        for label, cls in enumerate(CLASS_NAMES):
            folder = raw / root / cls
            if folder.is_dir():
                out += [(p.relative_to(raw).as_posix(), label) for p in sorted(folder.iterdir()) if is_image(p)]
    return out


def list_test_images(raw: Path) -> list[str]:
    folder = raw / "test"
    return [p.relative_to(raw).as_posix() for p in sorted(folder.iterdir(), key=_natural_key) if is_image(p)] \
        if folder.is_dir() else []


def _natural_key(path: Path):
    stem = path.stem
    return (0, int(stem), path.name) if stem.isdigit() else (1, 0, path.name)


def excluded_images(source_dir: Path) -> set[str]:
    """Raw-relative paths the data stage marked corrupt (empty when there is no manifest)."""
    manifest = source_dir / "manifest.json"
    if not manifest.exists():
        log.info("no %s: every image is validated while decoding", manifest)
        return set()
    try:
        data = read_json(manifest)
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read {manifest}: {exc}; run `make data COMP=cervix` again") from exc
    return {str(p).replace("\\", "/") for p in data.get("excluded", [])}


# ---------------------------------------------------------------------------------------------
# decoding


def fit_square(image: Image.Image, size: int, fit: str) -> Image.Image:
    """Square ``size`` x ``size`` copy of ``image``: centre crop or centre pad (see module docstring)."""
    width, height = image.size
    if fit == "crop":
        side = min(width, height)
        left, upper = (width - side) // 2, (height - side) // 2
        return image.resize((size, size), Image.BILINEAR, box=(left, upper, left + side, upper + side),
                            reducing_gap=3.0)
    if fit != "pad":
        raise ValueError(f"unknown fit {fit!r}")
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new, Image.BILINEAR, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def decode_image(path: Path, size: int, crop: bool = False, fit: str = "crop") -> tuple[np.ndarray, bool]:
    """(S, S, 3) uint8 array of one image, and whether the cervix crop found a region.

    Raises one of DECODE_ERRORS for an unreadable file.
    """
    with Image.open(path) as image:
        # Let the JPEG decoder shrink by up to 8x while decoding; keep 2x (4x when cropping, since
        # the crop may keep only part of the photo) the target size for a clean final resize.
        want = size * (4 if crop else 2)
        image.draft("RGB", (want, want))
        image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
    found = False
    if crop:
        box, found = find_cervix_box(image)
        image = image.crop(box)
    return np.asarray(fit_square(image, size, fit), dtype=np.uint8), found


def _decode_or_error(path: Path, size: int, crop: bool, fit: str):
    try:
        array, found = decode_image(path, size, crop, fit)
        return array, found, None
    except DECODE_ERRORS as exc:
        return None, False, f"{type(exc).__name__}: {exc}"


def write_image_tensor(paths: list[Path], out_path: Path, size: int, crop: bool, fit: str, workers: int,
                       desc: str) -> tuple[np.ndarray, dict[int, str], int]:
    """Decode ``paths`` into ``out_path`` (N_ok, S, S, 3) uint8, atomically.

    Returns (kept row positions into ``paths``, {position: error} of the failures, crop fallbacks).
    """
    n = len(paths)
    errors: dict[int, str] = {}
    fallbacks = 0
    with atomic_path(out_path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        decode = partial(_decode_or_error, size=size, crop=crop, fit=fit)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(decode, paths)
            for i, (image, found, error) in enumerate(tqdm(results, total=n, desc=desc, unit="img",
                                                           disable=n == 0, leave=False)):
                if error is not None:
                    errors[i] = error
                    continue
                array[i] = image
                fallbacks += crop and not found
        array.flush()
        kept = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
        if errors:  # rewrite without the failed rows (rare): replace the temp file, still atomic
            with atomic_path(tmp, suffix=".npy") as compact_tmp:
                compact = np.lib.format.open_memmap(compact_tmp, mode="w+", dtype=np.uint8,
                                                    shape=(len(kept), size, size, 3))
                for start in range(0, len(kept), 512):
                    compact[start:start + 512] = array[kept[start:start + 512]]
                compact.flush()
                del compact
        del array
    return kept, errors, fallbacks


# ---------------------------------------------------------------------------------------------
# stage


def output_names(size: int) -> list[str]:
    return [f"train_{size}.npy", f"test_{size}.npy", "train_labels.npy", "train_names.json", "test_names.json",
            "folds.npy"]


def build_features(source: str, image_size: int = DEFAULT_IMAGE_SIZE, crop: bool = False, fit: str = "crop",
                   use_additional: bool = False, n_folds: int = config.N_FOLDS, seed: int = config.SEED,
                   workers: int | None = None, force: bool = False) -> Path:
    """Run the tensor stage for one source; returns the features folder."""
    if image_size < 8:
        raise StageError(f"--image-size {image_size} is too small; use at least 8 (default {DEFAULT_IMAGE_SIZE})")
    raw = config.raw_dir("cervix", source)
    if not (raw / "train").is_dir():
        raise StageError(f"no cervix images at {raw / 'train'}: run `make data COMP=cervix SOURCE={source}` first")
    out_dir = config.features_dir("cervix", source)
    source_dir = config.source_dir("cervix", source)
    excluded = excluded_images(source_dir)
    params = {"image_size": image_size, "crop": crop, "fit": fit, "use_additional": use_additional,
              "n_folds": n_folds, "seed": seed, "excluded": sorted(excluded)}
    deps = [raw / "train", raw / "test", source_dir / "manifest.json"]
    if use_additional:
        deps.append(raw / "additional")
    stage = Stage("features", out_dir, deps=deps, params=params, outs=output_names(image_size))
    if not force and stage.up_to_date():
        log.info(stage.skip_message())
        return out_dir
    log.info("features: building (%s)", stage.why_stale() if not force else "forced")

    train_items = list_train_images(raw, use_additional)
    test_items = list_test_images(raw)
    if (raw / "test_stg2").is_dir():
        log.info("raw/test_stg2 is present but not used: the submission follows sample_submission_stg1.csv (test/)")
    if use_additional and not (raw / "additional").is_dir():
        log.warning("--use-additional: %s does not exist; training on train/ only", raw / "additional")
    skipped = {p: "excluded by the data stage (corrupt)" for p, _ in train_items if p in excluded}
    skipped.update({p: "excluded by the data stage (corrupt)" for p in test_items if p in excluded})
    train_items = [(p, y) for p, y in train_items if p not in excluded]
    test_items = [p for p in test_items if p not in excluded]
    if not train_items:
        raise StageError(f"no train images under {raw}/train/Type_1..3 (jpg/png): "
                         f"run `make data COMP=cervix SOURCE={source}` again")

    workers = workers or config.n_workers()
    t0 = time.perf_counter()
    train_paths = [raw / p for p, _ in train_items]
    kept, errors, fallbacks = write_image_tensor(train_paths, out_dir / f"train_{image_size}.npy", image_size,
                                                 crop, fit, workers, "decode train")
    skipped.update({train_items[i][0]: e for i, e in errors.items()})
    kept_test, test_errors, test_fallbacks = write_image_tensor(
        [raw / p for p in test_items], out_dir / f"test_{image_size}.npy", image_size, crop, fit, workers,
        "decode test")
    skipped.update({test_items[i]: e for i, e in test_errors.items()})
    seconds = time.perf_counter() - t0
    if test_errors:
        log.warning("%d test image(s) could not be decoded and get no prediction; the submission check will "
                    "name them", len(test_errors))

    train_names = [train_items[i][0] for i in kept]
    labels = np.array([train_items[i][1] for i in kept], dtype=np.int8)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if counts.min() < n_folds:
        raise StageError(f"too few images for {n_folds}-fold CV: per class {dict(zip(CLASS_NAMES, counts.tolist()))}; "
                         f"add images or pass --n-folds {max(2, int(counts.min()))}")
    folds = make_folds(labels, n_folds, seed)
    save_npy(out_dir / "train_labels.npy", labels)
    save_npy(out_dir / "folds.npy", folds)
    write_json(out_dir / "train_names.json", train_names)
    write_json(out_dir / "test_names.json", [Path(test_items[i]).name for i in kept_test])

    n_images = len(train_paths) + len(test_items)
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in list(skipped.items())[:5])
        log.warning("skipped %d unusable image(s): %s%s", len(skipped), shown, " ..." if len(skipped) > 5 else "")
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("features: %d train (%s) + %d test images at %dx%d in %.1fs (%.0f images/s)%s -> %s",
             len(train_names), ", ".join(f"{c} {n}" for c, n in zip(CLASS_NAMES, counts)), len(kept_test),
             image_size, image_size, seconds, rate,
             f"; crop fell back to the centre on {fallbacks + test_fallbacks}" if crop else "", out_dir)
    stage.done(extra={"skipped": skipped, "counts": dict(zip(CLASS_NAMES, counts.tolist())),
                      "n_train": len(train_names), "n_test": len(kept_test), "decode_seconds": round(seconds, 3),
                      "images_per_second": round(rate, 2), "crop_fallbacks": fallbacks + test_fallbacks})
    return out_dir


def load_tensors(source: str, image_size: int | None = None) -> Tensors:
    """The tensor stage's outputs for ``source``; ``image_size`` must match the stage's (None: take it)."""
    out_dir = config.features_dir("cervix", source)
    lock_path = out_dir / LOCK_NAME
    if not lock_path.exists():
        raise StageError(f"no cervix features for source {config.source_label(source)!r} ({out_dir}): "
                         f"run `make features COMP=cervix SOURCE={source}` first")
    check_current(lock_path, f"make features COMP=cervix SOURCE={source}")  # damaged or out of date: one line
    built = int(read_json(lock_path)["params_used"]["image_size"])
    if image_size is not None and image_size != built:
        raise StageError(f"--image-size {image_size} does not match the features, built at {built} px: pass "
                         f"--image-size {built}, or rebuild with `make features COMP=cervix ARGS='--image-size "
                         f"{image_size}'`")
    missing = [n for n in output_names(built) if not (out_dir / n).exists()]
    if missing:
        raise StageError(f"cervix features in {out_dir} are incomplete (missing {', '.join(missing)}): "
                         f"run `make features COMP=cervix SOURCE={source}` again")
    return Tensors(
        x_train=np.load(out_dir / f"train_{built}.npy", mmap_mode="r"),
        y=np.load(out_dir / "train_labels.npy").astype(np.int64),
        folds=np.load(out_dir / "folds.npy"),
        train_names=read_json(out_dir / "train_names.json"),
        x_test=np.load(out_dir / f"test_{built}.npy", mmap_mode="r"),
        test_names=read_json(out_dir / "test_names.json"),
        image_size=built,
        lock_path=lock_path,
    )


def main(args: argparse.Namespace) -> int:
    build_features(args.source, image_size=args.image_size, crop=args.crop, fit=args.fit,
                   use_additional=args.use_additional, n_folds=args.n_folds, seed=args.seed,
                   workers=args.workers, force=args.force)
    return 0
