"""Cervix tensor stage: every image decoded once into uint8 arrays on disk.

    data/cervix/<source>/features/
        train_<S>.npy       (N, S, S, 3) uint8, RGB, one row per usable train image
        test_<S>.npy        (M, S, S, 3) uint8 (M may be 0)
        train_labels.npy    (N,) int8: 0, 1, 2 for Type_1, Type_2, Type_3 (as fixed_labels_v2.csv corrects them)
        train_names.json    raw-relative paths, e.g. "train/Type_1/0.jpg" (the OOF ids)
        test_names.json     file names, e.g. "0.jpg" (the submission's image_name)
        folds.npy           (N,) stratified fold ids (pipelines.common.cv.make_folds); -1: fit-only
        fit_exclude.npy     (N, K) bool: row i never trains fold k's model (near-duplicates, see below)
        features.lock.json  stage cache: inputs, parameters, skipped, relabelled and withdrawn files, timings

Rows, in this order:
    train/Type_k/*.jpg        the competition's train images, types as fixed_labels_v2.csv corrects them,
                              minus the images removed_files.csv withdraws; validated (stratified folds)
    test/<name>               the stage-1 test images with their released types (solution_stg1_release.csv;
                              --stage1-labels, on when the file is there); validated like train/
    additional/Type_k/*.jpg   with --use-additional: fit-only (fold -1), in the training part of every
                              fold and in no validation fold, so the CV score stays on the competition's
                              images and is comparable with and without them

Near-duplicates (the additional set repeats train photos of the same patients): an additional image
whose 256-bit difference hash (16x16 gradient signs of its grey thumbnail) is within
TWIN_MAX_DISTANCE bits of a validated image's is that image's twin; it is kept out of the training
part of the fold its twin is validated in (every such fold, for several twins), so no model is
scored on an image it trained on a copy of. The hash catches copies re-saved at another size,
quality or brightness, trimmed by about 1%; not a second photo of the same cervix from another angle
or distance (those stay in every fold's training part).

Test rows follow the stage (``--stage``, default 2 when raw/ holds test_stg2/ and
sample_submission_stg2.csv, else 1): stage 1 the images of test/; stage 2 every image of
sample_submission_stg2.csv (test/ and test_stg2/), in that file's order.

Per image: Pillow decode with ``Image.draft`` (the JPEG decoder downscales by 1/2..1/8 while
decoding, so a 4128x3096 original is never decoded at full size; decoding rates: BENCHMARKS.md,
cervix, Speed), EXIF orientation
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
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from pipelines import config
from pipelines.cervix import data as cervix_data
from pipelines.cervix.data import CLASSES, IMAGE_EXTENSIONS
from pipelines.cervix.crop import find_cervix_box
from pipelines.common.cv import make_folds
from pipelines.common.io import atomic_path, read_json, save_npy, write_json
from pipelines.common.log import StageError
from pipelines.common.stage import Stage, check_current

log = logging.getLogger(__name__)

CLASS_NAMES = list(CLASSES)  # label k is CLASS_NAMES[k] (the data stage's class folders, in order)
DEFAULT_IMAGE_SIZE = 128
# The sizes the default model set needs: 128 px for bow_svm and small_cnn, 224 px (the ImageNet
# resolution) for the pretrained backbones (``make train MODEL=all``).
DEFAULT_IMAGE_SIZES = (128, 224)
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
    fit_exclude: np.ndarray | None = None
    stage: int = 1
    data: dict | None = None  # what the rows are made of, when more than train/ (stage-1 labels, additional)
    lock_paths: tuple = ()  # the locks these arrays come from: the primary one, and the size's when another


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix features")
    g.add_argument("--image-size", type=int, nargs="+", default=list(DEFAULT_IMAGE_SIZES), metavar="PX",
                   help="side(s) of the square arrays in pixels, one tensor per size, each decoded from the "
                        f"original images (default {' '.join(map(str, DEFAULT_IMAGE_SIZES))}: the small models' "
                        "and the pretrained networks' sizes); a size already built is not decoded again")
    g.add_argument("--crop", action=argparse.BooleanOptionalAction, default=False,
                   help="crop each photo to the cervix region first (colour/sharpness heuristic; default off)")
    g.add_argument("--fit", choices=("crop", "pad"), default="crop",
                   help="how a non-square image becomes square: centre crop (default) or centre pad")
    g.add_argument("--use-additional", action="store_true",
                   help="also train on raw/additional/Type_k/*.jpg (Kaggle's additional images): in training "
                        "folds only, never validated; near-duplicates of validated images kept out of their folds")
    g.add_argument("--stage", dest="test_stage", type=int, choices=(1, 2), default=None,
                   help="test images to predict: 1 = test/ (sample_submission_stg1.csv), 2 = every image of "
                        "sample_submission_stg2.csv (test/ and test_stg2/; the format Kaggle scores). Default 2 "
                        "when raw/ has test_stg2/ and sample_submission_stg2.csv, else 1")
    g.add_argument("--stage1-labels", action=argparse.BooleanOptionalAction, default=None,
                   help="train (and validate) on the stage-1 test images with their released types "
                        "(solution_stg1_release.csv); default: on when the file is there")
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


def list_stage2_images(raw: Path) -> tuple[list[str], list[str]]:
    """(raw-relative paths of sample_submission_stg2.csv's images, in its order; names found nowhere)."""
    sub = cervix_data.read_csv_checked(raw / cervix_data.SAMPLE_SUBMISSIONS[2], ["image_name"],
                                f"get it again from {cervix_data.DATA_URL} (`make data COMP=cervix`)")
    paths, missing = [], []
    for name in sub["image_name"].str.strip():
        found = [f"{d}/{name}" for d in ("test", "test_stg2") if is_image(raw / d / name)]
        if len(found) > 1:
            raise StageError(f"{name} is in both test/ and test_stg2/ of {raw}: which one "
                             f"{cervix_data.SAMPLE_SUBMISSIONS[2]} means is unclear; run `make data` again")
        if found:
            paths.append(found[0])
        else:
            missing.append(name)
    return paths, missing


def resolve_stage(raw: Path, stage: int | None) -> int:
    available = cervix_data.available_stage(raw)
    if stage is None:
        if (raw / cervix_data.SAMPLE_SUBMISSIONS[2]).is_file() and available == 1:
            log.warning("%s is in raw/ but test_stg2/ is not: predicting stage 1; unpack test_stg2.7z (`make "
                        "data COMP=cervix`, its password in %s) for the stage-2 submission Kaggle scores",
                        cervix_data.SAMPLE_SUBMISSIONS[2], cervix_data.PASSWORD_FILE)
        return available
    if stage == 2 and available != 2:
        lacking = [n for n in (cervix_data.SAMPLE_SUBMISSIONS[2], "test_stg2/") if not (raw / n).exists()]
        raise StageError(f"--stage 2: {raw} lacks {' and '.join(lacking)}; get test_stg2.7z and "
                         f"sample_submission_stg2.csv from {cervix_data.DATA_URL} (`make data COMP=cervix`), "
                         f"or pass --stage 1")
    return stage


# ---------------------------------------------------------------------------------------------
# near-duplicates

TWIN_MAX_DISTANCE = 28  # bits of 256: a copy finds its photo, distinct photos lie beyond (tests/test_cervix_stage2.py)


def difference_hash(images: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N, 32) uint8: 256-bit difference hashes (signs of the horizontal gradient of a 16x17 grey thumbnail)."""
    out = np.zeros((len(images), 32), dtype=np.uint8)
    for start in range(0, len(images), batch):
        for i, image in enumerate(np.asarray(images[start:start + batch])):
            grey = Image.fromarray(image).convert("L").resize((17, 16), Image.BOX)
            a = np.asarray(grey, dtype=np.int16)
            out[start + i] = np.packbits((a[:, 1:] > a[:, :-1]).reshape(-1))
    return out


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def hash_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between packed hashes."""
    return _POPCOUNT[np.bitwise_xor(a[:, None, :], b[None, :, :])].sum(axis=2)


def twins_of(extra: np.ndarray, validated: np.ndarray, max_distance: int = TWIN_MAX_DISTANCE,
             block: int = 256) -> list[np.ndarray]:
    """For each hash in ``extra``, the indices of the ``validated`` hashes within ``max_distance`` bits."""
    found = []
    for start in range(0, len(extra), block):
        d = hash_distances(extra[start:start + block], validated)
        found += [np.flatnonzero(row <= max_distance) for row in d]
    return found


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
            "folds.npy", "fit_exclude.npy"]


def size_lock_name(size: int) -> str:
    return f"features_{size}.lock.json"


def build_features(source: str, image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, crop: bool = False,
                   fit: str = "crop", use_additional: bool = False, n_folds: int = config.N_FOLDS,
                   seed: int = config.SEED, workers: int | None = None, force: bool = False,
                   stage: int | None = None, stage1_labels: bool | None = None) -> Path:
    """Run the tensor stage for one source at one or more image sizes; returns the features folder.

    The smallest size is the primary one: its stage picks the rows, labels, folds and near-duplicates
    (``features.lock.json``). Every other size is a step of its own (``features_<S>.lock.json``,
    depending on the primary lock): the same rows decoded from the original images at S px, built
    once and skipped while up to date, so asking for a new size decodes that size only.
    """
    sizes = sorted({int(s) for s in ([image_size] if isinstance(image_size, (int, np.integer)) else image_size)})
    if not sizes:
        raise StageError(f"--image-size: give at least one size (default {' '.join(map(str, DEFAULT_IMAGE_SIZES))})")
    if sizes[0] < 8:
        raise StageError(f"--image-size {sizes[0]} is too small; use at least 8 (default {DEFAULT_IMAGE_SIZE})")
    out_dir = _build_primary(source, sizes[0], crop, fit, use_additional, n_folds, seed, workers, force, stage,
                             stage1_labels)
    for size in sizes[1:]:
        _build_size(source, size, crop, fit, workers, force)
    return out_dir


def _build_size(source: str, size: int, crop: bool, fit: str, workers: int | None, force: bool) -> None:
    """The primary stage's rows at another size (train_<S>.npy, test_<S>.npy), from the original images."""
    out_dir = config.features_dir("cervix", source)
    raw = config.raw_dir("cervix", source)
    primary = out_dir / LOCK_NAME
    lock = read_json(primary)
    primary_size = int(lock["params_used"]["image_size"])
    if size == primary_size:
        return
    step = Stage(f"features_{size}", out_dir, deps=[primary], params={"image_size": size, "crop": crop, "fit": fit},
                 outs=[f"train_{size}.npy", f"test_{size}.npy"])
    if not force and step.up_to_date():
        log.info(step.skip_message())
        return
    train_paths = [raw / p for p in read_json(out_dir / "train_names.json")]
    test_paths = [raw / p for p in lock.get("test_paths", [])]
    if len(test_paths) != len(read_json(out_dir / "test_names.json")):
        raise StageError(f"{primary} predates per-size tensors (no test_paths): rebuild with "
                         f"`make features COMP=cervix SOURCE={source} ARGS='--force'`")
    workers = workers or config.n_workers()
    t0 = time.perf_counter()
    for paths, name in ((train_paths, "train"), (test_paths, "test")):
        _, errors, _ = write_image_tensor(paths, out_dir / f"{name}_{size}.npy", size, crop, fit, workers,
                                          f"decode {name} {size}px")
        if errors:
            i, error = next(iter(errors.items()))
            raise StageError(f"{paths[i]} decoded at {primary_size} px but not at {size} px ({error}): "
                             f"check the file, then `make features COMP=cervix SOURCE={source} ARGS='--force'`")
    seconds = time.perf_counter() - t0
    log.info("features: %d train + %d test images at %dx%d in %.1fs -> %s", len(train_paths), len(test_paths),
             size, size, seconds, out_dir)
    step.done(extra={"decode_seconds": round(seconds, 3)})


def _build_primary(source: str, image_size: int, crop: bool, fit: str, use_additional: bool, n_folds: int,
                   seed: int, workers: int | None, force: bool, stage: int | None,
                   stage1_labels: bool | None) -> Path:
    """The tensor stage at its primary (smallest) size: rows, labels, folds, near-duplicates."""
    raw = config.raw_dir("cervix", source)
    if not (raw / "train").is_dir():
        raise StageError(f"no cervix images at {raw / 'train'}: run `make data COMP=cervix SOURCE={source}` first")
    out_dir = config.features_dir("cervix", source)
    source_dir = config.source_dir("cervix", source)
    excluded = excluded_images(source_dir)
    stage = resolve_stage(raw, stage)
    solution = cervix_data.stage1_labels(raw)
    if stage1_labels and solution is None:
        raise StageError(f"--stage1-labels: no {cervix_data.STAGE1_SOLUTION} in {raw}; get it from "
                         f"{cervix_data.DATA_URL} (`make data COMP=cervix`) or pass --no-stage1-labels")
    stage1_labels = solution is not None if stage1_labels is None else stage1_labels
    params = {"image_size": image_size, "crop": crop, "fit": fit, "use_additional": use_additional,
              "n_folds": n_folds, "seed": seed, "excluded": sorted(excluded), "stage": stage,
              "stage1_labels": stage1_labels}
    if use_additional:
        params["twin_max_distance"] = TWIN_MAX_DISTANCE
    deps = [raw / "train", raw / "test", source_dir / "manifest.json", raw / cervix_data.FIXED_LABELS,
            raw / cervix_data.REMOVED_FILES]
    if use_additional:
        deps.append(raw / "additional")
    if stage1_labels:
        deps.append(raw / cervix_data.STAGE1_SOLUTION)
    if stage == 2:
        deps += [raw / "test_stg2", raw / cervix_data.SAMPLE_SUBMISSIONS[2]]
    stage_cache = Stage("features", out_dir, deps=deps, params=params, outs=output_names(image_size))
    if not force and stage_cache.up_to_date():
        log.info(stage_cache.skip_message())
        return out_dir
    log.info("features: building (%s)", stage_cache.why_stale() if not force else "forced")

    # The organisers' corrections, then the rows: train/, the labelled stage-1 test images, additional/.
    corrections = cervix_data.organiser_labels(raw)
    relabelled, withdrawn = corrections["relabelled"], set(corrections["removed"])
    train_items = list_train_images(raw, use_additional)
    if use_additional and not (raw / "additional").is_dir():
        log.warning("--use-additional: %s does not exist; training on train/ only", raw / "additional")
    skipped = {p: "excluded by the data stage (corrupt)" for p, _ in train_items if p in excluded}
    skipped.update({p: f"withdrawn by the organisers ({cervix_data.REMOVED_FILES})" for p, _ in train_items
                    if p in withdrawn and p not in excluded})
    applied = {p: relabelled[p] for p, _ in train_items if p in relabelled and p not in excluded}
    train_items = [(p, CLASS_NAMES.index(relabelled[p]) if p in relabelled else y) for p, y in train_items
                   if p not in excluded and p not in withdrawn]
    if not any(p.startswith("train/") for p, _ in train_items):
        raise StageError(f"no train images under {raw}/train/Type_1..3 (jpg/png): "
                         f"run `make data COMP=cervix SOURCE={source}` again")
    competition = [it for it in train_items if it[0].startswith("train/")]
    additional = [it for it in train_items if not it[0].startswith("train/")]
    labelled_test = []
    if stage1_labels:
        labelled_test = [(p, solution[Path(p).name]) for p in list_test_images(raw)
                         if Path(p).name in solution and p not in excluded]
        unknown = len(solution) - len(labelled_test)
        if unknown:
            log.warning("%s: %d labelled image(s) not usable in test/ (absent or corrupt)",
                        cervix_data.STAGE1_SOLUTION, unknown)
    train_items = competition + labelled_test + additional
    if labelled_test and stage == 1:
        log.warning("--stage 1 with the released stage-1 labels: the test images predicted are training rows too, "
                    "so their predictions are no test of the models (pass --no-stage1-labels to keep them out)")
    n_validated = len(competition) + len(labelled_test)

    if stage == 2:
        test_items, absent = list_stage2_images(raw)
        if absent:
            log.warning("%d image(s) of %s are in neither test/ nor test_stg2/ (e.g. %s) and get no prediction; "
                        "the submission check will name them", len(absent), cervix_data.SAMPLE_SUBMISSIONS[2],
                        ", ".join(absent[:3]))
    else:
        test_items = list_test_images(raw)
    skipped.update({p: "excluded by the data stage (corrupt)" for p in test_items if p in excluded})
    test_items = [p for p in test_items if p not in excluded]

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
    validated = kept < n_validated
    counts = np.bincount(labels[validated], minlength=len(CLASS_NAMES))
    if counts.min() < n_folds:
        raise StageError(f"too few images for {n_folds}-fold CV: per class {dict(zip(CLASS_NAMES, counts.tolist()))}; "
                         f"add images or pass --n-folds {max(2, int(counts.min()))}")
    folds = np.full(len(labels), -1, dtype=np.int8)
    folds[validated] = make_folds(labels[validated], n_folds, seed)
    fit_exclude = np.zeros((len(labels), n_folds), dtype=bool)
    twins: dict[str, list[str]] = {}
    if not validated.all():
        x = np.load(out_dir / f"train_{image_size}.npy", mmap_mode="r")
        rows_v, rows_x = np.flatnonzero(validated), np.flatnonzero(~validated)
        hashes = difference_hash(x)
        for i, found in zip(rows_x, twins_of(hashes[rows_x], hashes[rows_v])):
            if len(found):
                fit_exclude[i, np.unique(folds[rows_v[found]])] = True
                twins[train_names[i]] = [train_names[j] for j in rows_v[found]]
        del x
    save_npy(out_dir / "train_labels.npy", labels)
    save_npy(out_dir / "folds.npy", folds)
    save_npy(out_dir / "fit_exclude.npy", fit_exclude)
    write_json(out_dir / "train_names.json", train_names)
    write_json(out_dir / "test_names.json", [Path(test_items[i]).name for i in kept_test])

    n_images = len(train_paths) + len(test_items)
    if applied or withdrawn:
        shown = ", ".join(f"{p} -> {t}" for p, t in list(applied.items())[:3])
        n_withdrawn = sum(1 for why in skipped.values() if why.startswith("withdrawn"))
        log.info("organisers' corrections: %d image(s) change type (%s%s), %d withdrawn (%s)", len(applied),
                 cervix_data.FIXED_LABELS, f": {shown}" + (" ..." if len(applied) > 3 else "") if shown else "",
                 n_withdrawn, cervix_data.REMOVED_FILES)
    n_extra = int((~validated).sum())
    if n_extra:
        log.info("additional: %d image(s) in training folds only; %d near-duplicate(s) of validated images kept out "
                 "of their twins' folds, %d of them in no fold's training", n_extra, len(twins),
                 int(fit_exclude.all(axis=1).sum()))
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in list(skipped.items())[:5])
        log.warning("skipped %d unusable image(s): %s%s", len(skipped), shown, " ..." if len(skipped) > 5 else "")
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("features: %d train (%s)%s%s + %d stage-%d test images at %dx%d in %.1fs (%.0f images/s)%s -> %s",
             int(validated.sum()), ", ".join(f"{c} {n}" for c, n in zip(CLASS_NAMES, counts)),
             f", of them {int((validated & np.array([n.startswith('test/') for n in train_names], bool)).sum())} "
             f"stage-1 test images" if labelled_test else "",
             f", + {n_extra} fit-only additional" if n_extra else "", len(kept_test), stage,
             image_size, image_size, seconds, rate,
             f"; crop fell back to the centre on {fallbacks + test_fallbacks}" if crop else "", out_dir)
    stage_cache.done(extra={
        "skipped": skipped, "counts": dict(zip(CLASS_NAMES, counts.tolist())),
        "n_train": int(validated.sum()), "n_test": len(kept_test), "test_stage": stage,
        "n_stage1_labelled": sum(1 for n in train_names if n.startswith("test/")),
        "n_fit_only": n_extra, "relabelled": applied,
        "withdrawn": sorted(p for p, why in skipped.items() if why.startswith("withdrawn")),
        "twins": twins, "decode_seconds": round(seconds, 3), "images_per_second": round(rate, 2),
        "test_paths": [test_items[i] for i in kept_test],
        "crop_fallbacks": fallbacks + test_fallbacks})
    return out_dir


def built_sizes(source: str) -> list[int]:
    """Image sizes the tensor stage has built for ``source`` (the primary first; [] before the stage ran)."""
    out_dir = config.features_dir("cervix", source)
    if not (out_dir / LOCK_NAME).exists():
        return []
    primary = int(read_json(out_dir / LOCK_NAME)["params_used"]["image_size"])
    extra = sorted(int(p.name.split("_")[1].split(".")[0]) for p in out_dir.glob("features_*.lock.json"))
    return [primary] + [s for s in extra if s != primary]


def load_tensors(source: str, image_size: int | None = None) -> Tensors:
    """The tensor stage's outputs for ``source`` at ``image_size`` (one of the sizes it built; None: the
    primary size)."""
    out_dir = config.features_dir("cervix", source)
    lock_path = out_dir / LOCK_NAME
    if not lock_path.exists():
        raise StageError(f"no cervix features for source {config.source_label(source)!r} ({out_dir}): "
                         f"run `make features COMP=cervix SOURCE={source}` first")
    check_current(lock_path, f"make features COMP=cervix SOURCE={source}")  # damaged or out of date: one line
    built = int(read_json(lock_path)["params_used"]["image_size"])
    if image_size is not None and image_size != built:
        size_lock = out_dir / size_lock_name(image_size)
        sizes = built_sizes(source)
        if not size_lock.exists():
            raise StageError(f"no {image_size}-px cervix tensors (built: {', '.join(f'{s} px' for s in sizes)}): "
                             f"build them with `make features COMP=cervix SOURCE={source} ARGS='--image-size "
                             f"{' '.join(str(s) for s in sorted(set(sizes) | {image_size}))}'`, or pass "
                             f"--image-size {built}")
        check_current(size_lock, f"make features COMP=cervix SOURCE={source} ARGS='--image-size "
                                 f"{' '.join(str(s) for s in sizes)}'")
        built = image_size
        lock_paths = (lock_path, size_lock)
    else:
        lock_paths = (lock_path,)
    missing = [n for n in output_names(built) if not (out_dir / n).exists()]
    if missing:
        raise StageError(f"cervix features in {out_dir} are incomplete (missing {', '.join(missing)}): "
                         f"run `make features COMP=cervix SOURCE={source}` again")
    lock = read_json(lock_path)
    data = {k: lock[k] for k in ("n_stage1_labelled", "n_fit_only") if lock.get(k)}
    if lock.get("n_fit_only"):
        data["twins"] = len(lock.get("twins") or {})
    return Tensors(
        fit_exclude=np.load(out_dir / "fit_exclude.npy"),
        stage=int(lock["params_used"].get("stage", 1)),
        data=data or None,
        x_train=np.load(out_dir / f"train_{built}.npy", mmap_mode="r"),
        y=np.load(out_dir / "train_labels.npy").astype(np.int64),
        folds=np.load(out_dir / "folds.npy"),
        train_names=read_json(out_dir / "train_names.json"),
        x_test=np.load(out_dir / f"test_{built}.npy", mmap_mode="r"),
        test_names=read_json(out_dir / "test_names.json"),
        image_size=built,
        lock_path=lock_path,
        lock_paths=lock_paths,
    )


def main(args: argparse.Namespace) -> int:
    build_features(args.source, image_size=args.image_size, crop=args.crop, fit=args.fit,
                   use_additional=args.use_additional, n_folds=args.n_folds, seed=args.seed,
                   workers=args.workers, force=args.force, stage=args.test_stage, stage1_labels=args.stage1_labels)
    return 0
