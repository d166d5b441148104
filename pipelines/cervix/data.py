"""Intel & MobileODT Cervical Cancer Screening raw data: the synthetic sample and the validation of raw/.

Raw layout, as Kaggle ships it once unpacked:
    train/Type_1|Type_2|Type_3/*.jpg      labelled images (train.7z)
    test/*.jpg                            stage-1 test images (test.7z)
    sample_submission_stg1.csv            image_name,Type_1,Type_2,Type_3
    additional/Type_k/*.jpg               optional (additional_Type_k_v2.7z)
    test_stg2/*.jpg                       optional (test_stg2.7z, password-protected)

Kaggle's images include a few corrupt ones; every image is opened with Pillow and the broken ones are
listed in the manifest's ``excluded`` (later stages skip them) instead of crashing a run.
"""
from __future__ import annotations

import io
import logging
import shutil
import warnings as _warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipelines.common.io import atomic_path, write_bytes
from pipelines.common.log import StageError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "cervix-sample-v1"
CLASSES = ("Type_1", "Type_2", "Type_3")
DATA_URL = "https://www.kaggle.com/competitions/intel-mobileodt-cervical-cancer-screening/data"
SUBMISSION_COLUMNS = ["image_name", *CLASSES]
# Stage-1 sizes; `--size kaggle` makes a sample about as large (balanced classes).
KAGGLE_SIZE = {"n_per_class": 494, "n_test": 512}
IMAGE_EXTENSIONS = (".jpg", ".jpeg")
IMAGE_DIRS = ("train", "test", "additional", "test_stg2")
CSV_FILES = ("sample_submission_stg1.csv", "sample_submission_stg2.csv", "fixed_labels_v2.csv", "removed_files.csv",
             "solution_stg1_release.csv")
MARKER = "train"
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------- synthetic sample
# Per class: inner (red) region radius relative to the disc, its elongation, its edge lobes, its colour and
# the speckle of the tissue. The ranges overlap, so the classes are learnable but not trivially separable.
CLASS_LOOK = {
    "Type_1": {"radius": (0.18, 0.40), "aspect": (0.75, 1.0), "lobes": (0.0, 0.12),
               "red": (205, 62, 72), "disc": (232, 160, 168), "speckle": (0.02, 0.08)},
    "Type_2": {"radius": (0.28, 0.55), "aspect": (0.5, 0.85), "lobes": (0.04, 0.20),
               "red": (188, 52, 78), "disc": (222, 148, 160), "speckle": (0.04, 0.11)},
    "Type_3": {"radius": (0.40, 0.75), "aspect": (0.6, 1.0), "lobes": (0.10, 0.30),
               "red": (160, 40, 78), "disc": (205, 135, 158), "speckle": (0.06, 0.15)},
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a small random grid upsampled with bicubic interpolation."""
    grid = rng.uniform(0, 255, size=(cells, max(2, cells * w // h))).astype(np.uint8)
    up = Image.fromarray(grid, mode="L").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1.0


def render_image(rng: np.random.Generator, cls: str, image_size: int) -> Image.Image:
    """One synthetic colposcopy-like photo of class ``cls``: a pink disc with a class-shaped red zone."""
    look = CLASS_LOOK[cls]
    side = image_size * rng.uniform(0.85, 1.3)
    w, h = (int(side), int(side * 0.75)) if rng.random() < 0.5 else (int(side * 0.75), int(side))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(w, h)
    cx, cy = w / 2 + rng.normal(0, 0.08) * s, h / 2 + rng.normal(0, 0.08) * s
    disc_r = s * rng.uniform(0.30, 0.44)
    tilt = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(tilt) + dy * np.sin(tilt))
    v = (-dx * np.sin(tilt) + dy * np.cos(tilt))
    disc_d = np.sqrt((u / (disc_r * rng.uniform(1.0, 1.2))) ** 2 + (v / disc_r) ** 2)
    disc = 1 / (1 + np.exp((disc_d - 1) * 18))

    r = disc_r * rng.uniform(*look["radius"])
    aspect = rng.uniform(*look["aspect"])
    theta = np.arctan2(v, u)
    lobes = rng.uniform(*look["lobes"])
    k = rng.integers(3, 6)
    edge = 1 + lobes * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) + 0.5 * lobes * np.sin((k + 2) * theta)
    zone_d = np.sqrt((u / r) ** 2 + (v / (r * aspect)) ** 2) / edge
    zone = 1 / (1 + np.exp((zone_d - 1) * 10)) * disc

    background = np.array([95, 38, 42], np.float32) * rng.uniform(0.7, 1.2)
    disc_rgb = np.array(look["disc"], np.float32) + rng.normal(0, 8, 3)
    red_rgb = np.array(look["red"], np.float32) + rng.normal(0, 8, 3)
    img = background * (1 - disc[..., None]) + disc_rgb * disc[..., None]
    img = img * (1 - zone[..., None]) + red_rgb * zone[..., None]

    speckle = rng.uniform(*look["speckle"])
    texture = 1 + speckle * (_smooth_noise(rng, h, w, 24) + 0.5 * rng.normal(0, 1, (h, w)).astype(np.float32))
    shading = 1 + 0.15 * _smooth_noise(rng, h, w, 3)
    vignette = 1 - 0.35 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    img = img * (texture * shading * vignette)[..., None] * rng.uniform(0.8, 1.15)
    for _ in range(rng.integers(0, 4)):  # specular glints, as the speculum light makes
        gx, gy, gr = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1.5, 4) * s / 192
        glint = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * gr ** 2))
        img = img + 200 * glint[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")


def _jpeg_bytes(img: Image.Image, rng: np.random.Generator, exif_rotate: bool) -> bytes:
    """JPEG bytes; with ``exif_rotate`` the pixels are stored turned and an EXIF Orientation tag says how
    to turn them back (as phone cameras do), so loaders must apply ImageOps.exif_transpose."""
    buf = io.BytesIO()
    quality = int(rng.integers(80, 95))
    if exif_rotate:
        orientation, stored = [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                               (3, Image.Transpose.ROTATE_180)][int(rng.integers(0, 3))]
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        img.transpose(stored).save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate_sample(raw_dir: Path, n_per_class: int = 40, n_test: int = 30, seed: int = 42,
                    image_size: int = 192) -> None:
    """Write train/Type_k/*.jpg, test/*.jpg and sample_submission_stg1.csv (same seed -> same bytes).

    Besides the ``n_per_class`` good images per class, train/ gets three deliberately broken files (a
    truncated JPEG, an empty file, a text file named .jpg) that validation must exclude.
    """
    if n_per_class < 2 or n_test < 1 or image_size < 32:
        raise StageError(f"sample too small (n_per_class={n_per_class}, n_test={n_test}, image_size={image_size}): "
                         f"use --n-per-class >= 2, --n-test >= 1, --image-size >= 32")
    raw_dir = Path(raw_dir)
    rng = np.random.default_rng(seed)
    n_train = n_per_class * len(CLASSES)
    names = rng.permutation(n_train + 3)  # numeric names, unique across classes as in Kaggle's train/
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    jobs = [(f"train/{CLASSES[c]}/{names[i]}.jpg", CLASSES[c]) for i, c in enumerate(labels)]
    test_classes = rng.choice(CLASSES, size=n_test)
    jobs += [(f"test/{i}.jpg", str(c)) for i, c in enumerate(test_classes)]
    for rel, cls in tqdm(jobs, desc="cervix sample images", unit="img", disable=len(jobs) < 500):
        img = render_image(rng, cls, image_size)
        write_bytes(raw_dir / rel, _jpeg_bytes(img, rng, exif_rotate=rng.random() < 0.1))

    good = (raw_dir / jobs[0][0]).read_bytes()
    broken = {
        f"train/Type_1/{names[n_train]}.jpg": good[: len(good) * 2 // 5],   # truncated download
        f"train/Type_2/{names[n_train + 1]}.jpg": b"",                      # empty file
        f"train/Type_3/{names[n_train + 2]}.jpg": b"<html>404 Not Found</html>\n",  # not an image
    }
    for rel, data in broken.items():
        write_bytes(raw_dir / rel, data)

    prior = np.full(len(CLASSES), 1 / len(CLASSES))  # balanced classes: the prior is uniform
    sub = pd.DataFrame({"image_name": [f"{i}.jpg" for i in range(n_test)]})
    for c, p in zip(CLASSES, prior):
        sub[c] = p
    with atomic_path(raw_dir / "sample_submission_stg1.csv", suffix=".csv") as tmp:
        sub.to_csv(tmp, index=False, lineterminator="\n")


# ---------------------------------------------------------------- import helpers used by acquire.py
def is_data_name(rel: str) -> bool:
    """Whether a path (in the user's folder or inside an archive) is cervix competition data."""
    parts = Path(rel).parts
    first = parts[0] if parts else ""
    name = Path(rel).name
    for ext in (".zip", ".7z", ".gz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    if ".7z." in name.lower():  # split volume test_stg2.7z.001
        name = name[: name.lower().index(".7z.")]
    return (first in IMAGE_DIRS or first in CLASSES or first.startswith("additional")
            or name in CSV_FILES or name in IMAGE_DIRS or name.startswith("additional_Type_")
            or name == "intel-mobileodt-cervical-cancer-screening")


def keep(rel: str) -> bool:
    parts = Path(rel).parts
    return rel in CSV_FILES or (len(parts) > 1 and parts[0] in IMAGE_DIRS)


def looks_like(names: set[str]) -> bool:
    lowered = {Path(n).name.lower() for n in names} | {Path(n).parts[0].lower() for n in names if n}
    return bool(lowered & {"train.7z", "test.7z", "type_1", "sample_submission_stg1.csv",
                           "sample_submission_stg1.csv.zip", "intel-mobileodt-cervical-cancer-screening.zip"})


def archive_target(archive: Path, members: list[str]) -> str | None:
    """additional_Type_k_v2.7z may hold Type_k/...: put that under additional/ so it never mixes with train/."""
    if archive.name.lower().startswith("additional") and members and \
            all(Path(m).parts[0] in CLASSES for m in members):
        return "additional"
    return None


def normalize(root: Path) -> None:
    """additional_Type_k_v2/Type_k/ or additional_Type_k_v2/*.jpg -> additional/Type_k/."""
    root = Path(root)
    for folder in sorted(root.glob("additional_Type_*")):
        if not folder.is_dir():
            continue
        cls = next((c for c in CLASSES if c in folder.name), None)
        if cls is None:
            continue
        src = folder / cls if (folder / cls).is_dir() else folder
        dest = root / "additional" / cls
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            f.rename(dest / f.name)
        shutil.rmtree(folder)


# ---------------------------------------------------------------- validation
def check_image(path: Path) -> str | None:
    """Why an image file is unusable ('empty file', 'not an image', 'truncated or corrupt: ...'), or None."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.format == "JPEG":  # decoding at 1/8 scale still reads every byte, and is ~8x cheaper
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"truncated or corrupt: {str(exc)[:80]}"
    return None


def _images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly in ``folder``."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return ([p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS],
            [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS])


def validate(raw_dir: Path) -> dict:
    """Check raw/ (folders, CSV, every image); returns the report that goes into manifest.json."""
    raw_dir = Path(raw_dir)
    fix = f"get train.7z, test.7z and sample_submission_stg1.csv.zip from {DATA_URL}"
    missing = [d for d in ("train/Type_1", "train/Type_2", "train/Type_3", "test") if not (raw_dir / d).is_dir()]
    if missing:
        raise StageError(f"{', '.join(missing)} not found in the cervix data ({raw_dir}); expected train/Type_1..3/*.jpg "
                         f"and test/*.jpg (folders, or train.7z and test.7z): {fix}")
    warnings: list[str] = []
    groups: dict[str, list[Path]] = {}
    for cls in CLASSES:
        groups[f"train/{cls}"] = _images(raw_dir / "train" / cls)[0]
        groups[f"additional/{cls}"] = _images(raw_dir / "additional" / cls)[0]
    groups["test"] = _images(raw_dir / "test")[0]
    groups["test_stg2"] = _images(raw_dir / "test_stg2")[0]
    others = [p for d in [f"train/{c}" for c in CLASSES] + [f"additional/{c}" for c in CLASSES] + ["test", "test_stg2"]
              for p in _images(raw_dir / d)[1]]
    if others:
        warnings.append(f"{len(others)} non-.jpg file(s) in image folders ignored, e.g. "
                        f"{others[0].relative_to(raw_dir).as_posix()}")
    for cls in CLASSES:
        if not groups[f"train/{cls}"]:
            raise StageError(f"train/{cls} holds no .jpg images ({raw_dir}); {fix}")
    if not groups["test"]:
        raise StageError(f"test/ holds no .jpg images ({raw_dir}); {fix}")

    all_images = [p for paths in groups.values() for p in paths]
    excluded: dict[str, str] = {}
    for p in tqdm(all_images, desc="checking images", unit="img", disable=len(all_images) < 200):
        reason = check_image(p)
        if reason:
            excluded[p.relative_to(raw_dir).as_posix()] = reason
    if excluded:
        shown = ", ".join(f"{k} ({v})" for k, v in list(excluded.items())[:3])
        warnings.append(f"{len(excluded)} unreadable image(s) excluded: {shown}{', ...' if len(excluded) > 3 else ''}")

    def valid(key: str) -> int:
        return sum(1 for p in groups[key] if p.relative_to(raw_dir).as_posix() not in excluded)

    sub_path = raw_dir / "sample_submission_stg1.csv"
    n_sub = None
    if sub_path.is_file():
        try:
            sub = pd.read_csv(sub_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise StageError(f"{sub_path.name} is not a readable CSV ({type(exc).__name__}); {fix}") from exc
        absent = [c for c in SUBMISSION_COLUMNS if c not in sub.columns]
        if absent:
            raise StageError(f"{sub_path.name}: missing column(s) {', '.join(absent)} "
                             f"(has {', '.join(map(str, sub.columns))}); {fix}")
        dup = sub["image_name"][sub["image_name"].duplicated()]
        if len(dup):
            raise StageError(f"{sub_path.name}: {len(dup)} duplicate image_name value(s), e.g. {dup.head(3).tolist()}; {fix}")
        n_sub = len(sub)
        names = {p.name for p in groups["test"]}
        listed = set(sub["image_name"].astype(str))
        if listed != names:
            warnings.append(f"{sub_path.name} lists {len(listed - names)} image(s) not in test/ and test/ has "
                            f"{len(names - listed)} not listed")
    else:
        warnings.append("sample_submission_stg1.csv absent: submissions will be checked against test/ image names")

    class_balance = {cls: valid(f"train/{cls}") for cls in CLASSES}
    counts = {
        "train_images": sum(class_balance.values()),
        "train_files": sum(len(groups[f"train/{c}"]) for c in CLASSES),
        "test_images": valid("test"),
        "test_files": len(groups["test"]),
        "additional_images": sum(valid(f"additional/{c}") for c in CLASSES),
        "test_stg2_images": valid("test_stg2"),
        "sample_submission_rows": n_sub,
    }
    if counts["additional_images"]:
        class_balance_additional = {cls: valid(f"additional/{cls}") for cls in CLASSES}
    else:
        class_balance_additional = None
    for w in warnings:
        log.warning("%s", w)
    return {
        "counts": counts,
        "class_balance": class_balance,
        "class_balance_additional": class_balance_additional,
        "excluded": sorted(excluded),
        "excluded_reasons": excluded,
        "warnings": warnings,
    }


def summary_lines(report: dict) -> list[str]:
    c, b = report["counts"], report["class_balance"]
    lines = [f"train {c['train_images']:,} images ({', '.join(f'{k} {v:,}' for k, v in b.items())}), "
             f"test {c['test_images']:,} images"
             + (f", additional {c['additional_images']:,}" if c["additional_images"] else "")
             + (f", test_stg2 {c['test_stg2_images']:,}" if c["test_stg2_images"] else "")]
    if report["excluded"]:
        lines.append(f"excluded {len(report['excluded'])} unreadable image(s): {', '.join(report['excluded'][:3])}"
                     + (" ..." if len(report["excluded"]) > 3 else ""))
    return lines
