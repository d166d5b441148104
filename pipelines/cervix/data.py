"""Intel & MobileODT Cervical Cancer Screening raw data: the synthetic sample and the validation of raw/.

Raw layout, as Kaggle ships it once unpacked (both stages; everything but train/ and test/ optional):
    train/Type_1|Type_2|Type_3/*.jpg      labelled images (train.7z)
    test/*.jpg                            stage-1 test images (test.7z)
    sample_submission_stg1.csv            image_name,Type_1,Type_2,Type_3 (the 512 stage-1 test images)
    additional/Type_k/*.jpg               more labelled images (additional_Type_k_v2.7z)
    test_stg2/*.jpg                       stage-2 test images (test_stg2.7z, password-protected; the password
                                          is read from test_stg2_7z_password.txt when it is there)
    sample_submission_stg2.csv            the stage-1 and stage-2 test images: the format Kaggle scores now
    solution_stg1_release.csv             image_name,Type_1,Type_2,Type_3 one-hot: the stage-1 test labels
    fixed_labels_v2.csv                   filename,old_label,new_label: corrected types of train/additional images
    removed_files.csv                     filename: images the organisers withdrew

The images stay as shipped; ``organiser_labels`` says which of them changed type and which are
withdrawn, and the features stage applies it (both are counted in the manifest and the logs).

Kaggle's images include a few corrupt ones; every image is opened with Pillow and the broken ones are
listed in the manifest's ``excluded`` (later stages skip them) instead of crashing a run.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import shutil
import warnings as _warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from pipelines.common.io import atomic_path, write_bytes
from pipelines.common.log import StageError
from pipelines.common.options import option

log = logging.getLogger(__name__)

GENERATOR_VERSION = "cervix-sample-v2"
CLASSES = ("Type_1", "Type_2", "Type_3")
DATA_URL = "https://www.kaggle.com/competitions/intel-mobileodt-cervical-cancer-screening/data"
SUBMISSION_COLUMNS = ["image_name", *CLASSES]
# Kaggle's sizes; `--size kaggle` makes a sample about as large (balanced classes).


@dataclasses.dataclass
class SampleOptions:
    """The built-in sample's size (``make data COMP=cervix SOURCE=sample ARGS='--n-per-class 20'``)."""

    n_per_class: int = option(40, "sample: training images per class")
    n_test: int = option(30, "sample: stage-1 test images")
    image_size: int = option(192, "sample: image side in pixels")
    n_additional: int = option(4, "sample: additional images per class", cli=False)
    n_test_stg2: int = option(20, "sample: stage-2 test images besides the stage-1 ones", cli=False)


KAGGLE_SIZE = {"n_per_class": 494, "n_test": 512, "n_additional": 2308, "n_test_stg2": 3506}
IMAGE_EXTENSIONS = (".jpg", ".jpeg")
IMAGE_DIRS = ("train", "test", "additional", "test_stg2")
SAMPLE_SUBMISSIONS = {1: "sample_submission_stg1.csv", 2: "sample_submission_stg2.csv"}
FIXED_LABELS = "fixed_labels_v2.csv"
REMOVED_FILES = "removed_files.csv"
STAGE1_SOLUTION = "solution_stg1_release.csv"
PASSWORD_FILE = "test_stg2_7z_password.txt"
CSV_FILES = (*SAMPLE_SUBMISSIONS.values(), FIXED_LABELS, REMOVED_FILES, STAGE1_SOLUTION)
DATA_FILES = (*CSV_FILES, PASSWORD_FILE)
SAMPLE_PASSWORD = "sample-stg2"  # the built-in sample's test_stg2.7z password (written beside it, as Kaggle did)
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


def _uniform_submission(path: Path, names: list[str]) -> None:
    """A sample submission: the prior (uniform, the sample's classes are balanced) for every image."""
    sub = pd.DataFrame({"image_name": names})
    for c in CLASSES:
        sub[c] = 1 / len(CLASSES)
    _write_csv(path, sub)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def write_7z(path: Path, members: dict[str, bytes], rng: np.random.Generator, password: str | None = None) -> None:
    """A .7z of ``members`` (name -> bytes), AES-encrypted with ``password``; same rng state -> same bytes.

    7-Zip stamps every entry with the current time and encrypts with a random IV: both are fixed here
    (times at 2017-04-01, the IV drawn from ``rng``) so that a sample is reproducible to the byte.
    """
    import py7zr
    from unittest import mock

    fixed_time = classmethod(lambda cls: cls((1491004800 + 11644473600) * 10_000_000))
    with atomic_path(path, suffix=".7z") as tmp, \
            mock.patch("py7zr.compressor.get_random_bytes", lambda n: rng.bytes(n)), \
            mock.patch.object(py7zr.helpers.ArchiveTimestamp, "from_now", fixed_time):
        with py7zr.SevenZipFile(tmp, "w", password=password) as archive:
            for name, data in members.items():
                archive.writestr(data, name)


def _near_copy(data: bytes, rng: np.random.Generator) -> bytes:
    """Another JPEG of the same photo (as Kaggle's additional set repeats train photos): upright, its
    border trimmed by up to 0.5%, scaled down to 70-90%, slightly darker, saved at another quality."""
    with Image.open(io.BytesIO(data)) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    w, h = img.size
    trim, scale = rng.uniform(0.0, 0.005), rng.uniform(0.7, 0.9)
    box = (int(w * trim), int(h * trim), w - int(w * trim), h - int(h * trim))
    img = img.crop(box).resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BILINEAR)
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) * rng.uniform(0.92, 0.98), 0, 255).astype(np.uint8))
    return _jpeg_bytes(img, rng, exif_rotate=False)


def generate_sample(raw_dir: Path, n_per_class: int = SampleOptions.n_per_class, n_test: int = SampleOptions.n_test,
                    seed: int = 42, image_size: int = SampleOptions.image_size,
                    n_additional: int = SampleOptions.n_additional, n_test_stg2: int = SampleOptions.n_test_stg2) -> None:
    """Write Kaggle's whole layout at toy size (same seed -> same bytes).

    Unpacked as before: train/Type_k/*.jpg (``n_per_class`` good images per class, plus three
    deliberately broken files: a truncated JPEG, an empty file, a text file named .jpg, that validation
    must exclude), test/*.jpg and sample_submission_stg1.csv. As Kaggle ships them, for the data stage to
    unpack: additional_Type_k_v2.7z (``n_additional`` per class, the first of each class a near-copy of
    a train image), test_stg2.7z (``n_test_stg2`` images, password-protected, the password in
    test_stg2_7z_password.txt), sample_submission_stg2.csv (stage-1 and stage-2 test images),
    solution_stg1_release.csv (the true types of test/), fixed_labels_v2.csv and removed_files.csv
    (with 6+ images per class: two train images and one additional image stored under the wrong type,
    one train and one additional image that are not cervix photos at all).
    """
    if n_per_class < 2 or n_test < 1 or image_size < 32 or n_additional < 0 or n_test_stg2 < 0:
        raise StageError(f"sample too small (n_per_class={n_per_class}, n_test={n_test}, image_size={image_size}, "
                         f"n_additional={n_additional}, n_test_stg2={n_test_stg2}): use --n-per-class >= 2, "
                         f"--n-test >= 1, --image-size >= 32")
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
    _uniform_submission(raw_dir / SAMPLE_SUBMISSIONS[1], [f"{i}.jpg" for i in range(n_test)])

    # Stage 2 and the organisers' corrections, from their own random stream (train/ and test/ above are
    # those of the stage-1-only sample of the same seed, except the corrected and withdrawn images).
    rng = np.random.default_rng([seed, 2])
    solution = pd.DataFrame({"image_name": [f"{i}.jpg" for i in range(n_test)]})
    for c in CLASSES:
        solution[c] = (test_classes == c).astype(int)
    _write_csv(raw_dir / STAGE1_SOLUTION, solution)

    first = {c: [rel for rel, cls in jobs[:n_train] if cls == c] for c in CLASSES}
    fixes, removed = [], []
    additional: dict[str, dict[str, bytes]] = {c: {} for c in CLASSES}
    next_name = 10_000 + n_train
    for c in CLASSES:
        for j in range(n_additional):
            name = f"{next_name}.jpg"
            next_name += 1
            if j == 0 and n_additional > 1:
                additional[c][name] = _near_copy((raw_dir / first[c][-1]).read_bytes(), rng)
            else:
                additional[c][name] = _jpeg_bytes(render_image(rng, c, image_size), rng, rng.random() < 0.1)
    not_cervix = lambda: _jpeg_bytes(Image.fromarray(  # noqa: E731 - a grey test card, nothing like a cervix
        rng.integers(90, 130, (image_size * 3 // 4, image_size, 3)).astype(np.uint8), mode="RGB"), rng, False)
    if n_per_class >= 6:
        for rel, new in ((first["Type_1"][1], "Type_2"), (first["Type_3"][1], "Type_2")):
            write_bytes(raw_dir / rel, _jpeg_bytes(render_image(rng, new, image_size), rng, False))
            fixes.append((Path(rel).name, Path(rel).parent.name, new))
        removed.append(Path(first["Type_1"][2]).name)
        write_bytes(raw_dir / first["Type_1"][2], not_cervix())
    if n_per_class >= 6 and n_additional >= 3:
        name = list(additional["Type_2"])[1]
        additional["Type_2"][name] = _jpeg_bytes(render_image(rng, "Type_3", image_size), rng, False)
        fixes.append((name, "Type_2", "Type_3"))
        name = list(additional["Type_3"])[2]
        additional["Type_3"][name] = not_cervix()
        removed.append(name)
    _write_csv(raw_dir / FIXED_LABELS, pd.DataFrame(fixes, columns=["filename", "old_label", "new_label"]))
    _write_csv(raw_dir / REMOVED_FILES, pd.DataFrame({"filename": removed}))
    if n_additional:
        for c in CLASSES:
            write_7z(raw_dir / f"additional_{c}_v2.7z", {f"{c}/{n}": d for n, d in additional[c].items()}, rng)

    stg2_names = [f"{i:05d}.jpg" for i in range(1, n_test_stg2 + 1)]
    if stg2_names:
        stg2 = {f"test_stg2/{n}": _jpeg_bytes(render_image(rng, str(rng.choice(CLASSES)), image_size), rng,
                                               rng.random() < 0.1) for n in stg2_names}
        write_7z(raw_dir / "test_stg2.7z", stg2, rng, password=SAMPLE_PASSWORD)
        write_bytes(raw_dir / PASSWORD_FILE, f"{SAMPLE_PASSWORD}\n".encode())
        _uniform_submission(raw_dir / SAMPLE_SUBMISSIONS[2], [f"{i}.jpg" for i in range(n_test)] + stg2_names)


def archive_password(folder: Path) -> str | None:
    """The test_stg2.7z password from test_stg2_7z_password.txt (or its .zip) in ``folder``, if there."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    plain, zipped = folder / PASSWORD_FILE, folder / f"{PASSWORD_FILE}.zip"
    if plain.is_file():
        text = plain.read_bytes()
    elif zipped.is_file():
        import zipfile

        try:
            with zipfile.ZipFile(zipped) as zf:
                text = zf.read(next(n for n in zf.namelist() if n.endswith(PASSWORD_FILE)))
        except (zipfile.BadZipFile, StopIteration, KeyError):
            log.warning("%s holds no readable %s: pass the test_stg2.7z password with --password", zipped, PASSWORD_FILE)
            return None
    else:
        return None
    lines = [ln.strip() for ln in text.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        log.warning("%s is empty: pass the test_stg2.7z password with --password", PASSWORD_FILE)
        return None
    log.info("test_stg2.7z password read from %s", PASSWORD_FILE)
    return lines[0]


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
            or name in DATA_FILES or name in IMAGE_DIRS or name.startswith("additional_Type_")
            or name == "intel-mobileodt-cervical-cancer-screening")


def keep(rel: str) -> bool:
    parts = Path(rel).parts
    return rel in DATA_FILES or (len(parts) > 1 and parts[0] in IMAGE_DIRS)


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
                if im.format == "JPEG":  # decoding at 1/8 scale still reads every byte, and is much cheaper
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


def read_csv_checked(path: Path, columns: list[str], fix: str) -> pd.DataFrame:
    """``path`` as text columns; StageError naming the file when it is unreadable or lacks ``columns``."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StageError(f"{path.name} is not a readable CSV ({type(exc).__name__}); {fix}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise StageError(f"{path.name}: missing column(s) {', '.join(absent)} (has {', '.join(frame.columns)}); {fix}")
    return frame


def labelled_images(raw_dir: Path) -> list[str]:
    """Raw-relative paths of every .jpg under train/Type_k and additional/Type_k, sorted."""
    raw_dir = Path(raw_dir)
    return [p.relative_to(raw_dir).as_posix() for root in ("train", "additional") for c in CLASSES
            for p in _images(raw_dir / root / c)[0]]


def _matches(entry: str, images: list[str], label: str | None = None) -> list[str]:
    """The images a CSV entry names: same file name; a folder or type in the entry (``additional/Type_1/
    12.jpg``, ``Type_1\\12.jpg``) or ``label`` narrows it down."""
    parts = [p for p in entry.strip().replace("\\", "/").split("/") if p]
    if not parts:
        return []
    name, folders = parts[-1], set(parts[:-1])
    types = (folders & set(CLASSES)) | ({label} if label else set())
    roots = folders & {"train", "additional"}
    return [rel for rel in images if rel.rsplit("/", 1)[-1] == name
            and (not types or rel.split("/")[1] in types) and (not roots or rel.split("/")[0] in roots)]


def organiser_labels(raw_dir: Path, images: list[str] | None = None) -> dict:
    """What fixed_labels_v2.csv and removed_files.csv say about the train/ and additional/ images.

    Returns {"relabelled": {path: new type}, "removed": [paths], "unmatched_fixes": [...],
    "unmatched_removals": [...]}. A fix names a file and its old type: it applies to that file in that
    type's folder (train/ or additional/). A removal names a file: every train/ or additional/ image of
    that name (narrowed by a folder in the entry) is withdrawn; a withdrawn image is never relabelled.
    """
    raw_dir = Path(raw_dir)
    images = labelled_images(raw_dir) if images is None else images
    fix = f"get it again from {DATA_URL}"
    relabelled: dict[str, str] = {}
    removed: set[str] = set()
    unmatched_fixes: list[str] = []
    unmatched_removals: list[str] = []
    path = raw_dir / FIXED_LABELS
    if path.is_file():
        frame = read_csv_checked(path, ["filename", "old_label", "new_label"], fix)
        for row in frame.itertuples(index=False):
            old, new = str(row.old_label).strip(), str(row.new_label).strip()
            bad = [v for v in (old, new) if v not in CLASSES]
            if bad:
                raise StageError(f"{path.name}: {row.filename!r} has type {bad[0]!r}; types are "
                                 f"{', '.join(CLASSES)} ({fix})")
            found = _matches(str(row.filename), images, old)
            if not found:
                unmatched_fixes.append(str(row.filename))
            relabelled.update({rel: new for rel in found if new != old})
    path = raw_dir / REMOVED_FILES
    if path.is_file():
        for entry in read_csv_checked(path, ["filename"], fix)["filename"]:
            found = _matches(str(entry), images)
            if not found:
                unmatched_removals.append(str(entry))
            removed.update(found)
    relabelled = {rel: new for rel, new in sorted(relabelled.items()) if rel not in removed}
    return {"relabelled": relabelled, "removed": sorted(removed), "unmatched_fixes": unmatched_fixes,
            "unmatched_removals": unmatched_removals}


def stage1_labels(raw_dir: Path) -> dict[str, int] | None:
    """{stage-1 test image name: class index} from solution_stg1_release.csv, or None without the file."""
    path = Path(raw_dir) / STAGE1_SOLUTION
    if not path.is_file():
        return None
    fix = f"get it again from {DATA_URL}"
    frame = read_csv_checked(path, SUBMISSION_COLUMNS, fix)
    try:
        onehot = frame[list(CLASSES)].astype(float).to_numpy()
    except ValueError as exc:
        raise StageError(f"{path.name}: the type columns are not numbers ({exc}); {fix}") from None
    bad = ~((np.isin(onehot, (0.0, 1.0))).all(axis=1) & (onehot.sum(axis=1) == 1))
    if bad.any():
        raise StageError(f"{path.name}: {int(bad.sum())} row(s) are not one-hot (one 1 and two 0), e.g. "
                         f"{frame['image_name'].iloc[int(np.flatnonzero(bad)[0])]}; {fix}")
    names = frame["image_name"].str.strip()
    if names.duplicated().any():
        raise StageError(f"{path.name}: duplicate image_name {names[names.duplicated()].iloc[0]!r}; {fix}")
    return dict(zip(names, onehot.argmax(axis=1).tolist()))


def available_stage(raw_dir: Path) -> int:
    """2 when raw/ holds the stage-2 test images and sample_submission_stg2.csv, else 1."""
    raw_dir = Path(raw_dir)
    return 2 if (raw_dir / SAMPLE_SUBMISSIONS[2]).is_file() and (raw_dir / "test_stg2").is_dir() else 1


def _check_sample_submission(path: Path, test_names: set[str], where: str, fix: str,
                             warnings: list[str]) -> int:
    sub = read_csv_checked(path, SUBMISSION_COLUMNS, fix)
    dup = sub["image_name"][sub["image_name"].duplicated()]
    if len(dup):
        raise StageError(f"{path.name}: {len(dup)} duplicate image_name value(s), e.g. {dup.head(3).tolist()}; {fix}")
    listed = set(sub["image_name"].astype(str))
    if listed != test_names:
        warnings.append(f"{path.name} lists {len(listed - test_names)} image(s) not in {where} and {where} has "
                        f"{len(test_names - listed)} not listed")
    return len(sub)


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

    sub_path = raw_dir / SAMPLE_SUBMISSIONS[1]
    n_sub = None
    stage1_names = {p.name for p in groups["test"]}
    if sub_path.is_file():
        n_sub = _check_sample_submission(sub_path, stage1_names, "test/", fix, warnings)
    else:
        warnings.append("sample_submission_stg1.csv absent: submissions will be checked against test/ image names")
    n_sub2 = None
    if (raw_dir / SAMPLE_SUBMISSIONS[2]).is_file():
        stage2_names = stage1_names | {p.name for p in groups["test_stg2"]}
        n_sub2 = _check_sample_submission(raw_dir / SAMPLE_SUBMISSIONS[2], stage2_names, "test/ + test_stg2/",
                                          f"get it and test_stg2.7z from {DATA_URL}", warnings)
        if not groups["test_stg2"]:
            warnings.append(f"{SAMPLE_SUBMISSIONS[2]} is there but test_stg2/ is not: unpack test_stg2.7z (its "
                            f"password is in {PASSWORD_FILE}) to make the stage-2 submission")
    solution = stage1_labels(raw_dir)
    if solution is not None and set(solution) != stage1_names:
        warnings.append(f"{STAGE1_SOLUTION} lists {len(set(solution) - stage1_names)} image(s) not in test/ and "
                        f"test/ has {len(stage1_names - set(solution))} not listed")
    labels = organiser_labels(raw_dir)
    for what, key, name in (("fix(es)", "unmatched_fixes", FIXED_LABELS), ("removal(s)", "unmatched_removals",
                                                                           REMOVED_FILES)):
        if labels[key]:
            warnings.append(f"{len(labels[key])} {what} in {name} match no image in train/ or additional/, e.g. "
                            f"{', '.join(labels[key][:3])}")

    class_balance = {cls: valid(f"train/{cls}") for cls in CLASSES}
    counts = {
        "train_images": sum(class_balance.values()),
        "train_files": sum(len(groups[f"train/{c}"]) for c in CLASSES),
        "test_images": valid("test"),
        "test_files": len(groups["test"]),
        "additional_images": sum(valid(f"additional/{c}") for c in CLASSES),
        "test_stg2_images": valid("test_stg2"),
        "sample_submission_rows": n_sub,
        "sample_submission_stg2_rows": n_sub2,
        "stage1_labels": len(solution) if solution is not None else None,
        "relabelled": len(labels["relabelled"]),
        "removed": len(labels["removed"]),
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
        "labels": labels,
        "stage": available_stage(raw_dir),
        "warnings": warnings,
    }


def summary_lines(report: dict) -> list[str]:
    c, b = report["counts"], report["class_balance"]
    lines = [f"train {c['train_images']:,} images ({', '.join(f'{k} {v:,}' for k, v in b.items())}), "
             f"test {c['test_images']:,} images"
             + (f", additional {c['additional_images']:,}" if c["additional_images"] else "")
             + (f", test_stg2 {c['test_stg2_images']:,}" if c["test_stg2_images"] else "")]
    if c.get("sample_submission_stg2_rows") or c.get("stage1_labels"):
        stage = report.get("stage", 1)
        rows = c["sample_submission_stg2_rows"] if stage == 2 else c["sample_submission_rows"]
        lines.append(f"stage {stage} submission ({rows} rows)"
                     + (f", {c['stage1_labels']:,} stage-1 test labels" if c.get("stage1_labels") else ""))
    labels = report.get("labels") or {}
    if labels.get("relabelled") or labels.get("removed"):
        shown = ", ".join(f"{p} -> {t}" for p, t in list(labels["relabelled"].items())[:3])
        lines.append(f"organisers' corrections: {len(labels['relabelled'])} image(s) change type ({FIXED_LABELS}"
                     + (f": {shown}" if shown else "") + f"), {len(labels['removed'])} withdrawn ({REMOVED_FILES})")
    if report["excluded"]:
        lines.append(f"excluded {len(report['excluded'])} unreadable image(s): {', '.join(report['excluded'][:3])}"
                     + (" ..." if len(report["excluded"]) > 3 else ""))
    return lines
