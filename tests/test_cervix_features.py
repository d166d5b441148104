"""Cervix tensor stage and crop heuristic, on generated images (no Keras)."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import config
from pipelines.cervix import crop, features
from pipelines.common.io import read_json
from pipelines.common.log import StageError
from cervix_helpers import SIZES, features_args, make_raw, orientation_probe, raw_dir


def _build(**kwargs):
    opts = {"image_size": 24, "n_folds": 2, "workers": 2}
    opts.update(kwargs)
    return features.build_features("sample", **opts)


def test_tensor_stage_outputs(project_dirs, caplog):
    written = make_raw(raw_dir(), n_per_class=4, n_test=3)
    with caplog.at_level(logging.WARNING):
        assert features.main(features_args("sample", "--image-size", "24", "--n-folds", "2")) == 0
    out = config.features_dir("cervix", "sample")
    x = np.load(out / "train_24.npy")
    x_test = np.load(out / "test_24.npy")
    labels = np.load(out / "train_labels.npy")
    names = read_json(out / "train_names.json")
    assert x.shape == (12, 24, 24, 3) and x.dtype == np.uint8
    assert x_test.shape == (3, 24, 24, 3) and x_test.dtype == np.uint8
    assert set(names) == set(written["train"])  # the truncated and the excluded file are not there
    assert labels.tolist() == [int(n.split("/")[1][-1]) - 1 for n in names]
    assert read_json(out / "test_names.json") == ["0.jpg", "1.jpg", "2.jpg"]
    folds = np.load(out / "folds.npy")
    assert sorted(set(folds.tolist())) == [0, 1] and len(folds) == 12
    # every image was actually decoded (a skipped row would stay black): the disc is pink
    assert (x.reshape(12, -1).mean(axis=1) > 60).all()
    # both bad files reported: in the log and in the lock
    skipped = read_json(out / "features.lock.json")["skipped"]
    assert set(skipped) == {"train/Type_2/broken.jpg", "train/Type_3/empty.jpg"}
    assert "excluded by the data stage" in skipped["train/Type_3/empty.jpg"]
    assert "broken.jpg" in caplog.text and "skipped 2" in caplog.text


def test_corrupt_file_found_without_a_manifest(project_dirs, caplog):
    make_raw(raw_dir(), n_per_class=3, n_test=1, excluded_in_manifest=False)
    with caplog.at_level(logging.WARNING):
        out = _build()
    assert np.load(out / "train_24.npy").shape[0] == 9
    skipped = read_json(out / "features.lock.json")["skipped"]
    assert set(skipped) == {"train/Type_2/broken.jpg", "train/Type_3/empty.jpg"}
    assert "truncated" in skipped["train/Type_2/broken.jpg"] or "OSError" in skipped["train/Type_2/broken.jpg"]


def test_exif_orientation_is_honoured(tmp_path):
    upright, rotated = tmp_path / "up.jpg", tmp_path / "rot.jpg"
    orientation_probe(upright, None)
    orientation_probe(rotated, 6)  # "rotate 90 degrees clockwise to display": stored top -> right
    a, _ = features.decode_image(upright, 16)
    b, _ = features.decode_image(rotated, 16)
    red, blue = (0, 2)
    assert a[:6, :, red].mean() > 150 and a[-6:, :, blue].mean() > 150      # top red, bottom blue
    assert b[:, -6:, red].mean() > 150 and b[:, :6, blue].mean() > 150      # right red, left blue


def test_exif_rotated_non_square_images_in_the_stage(project_dirs):
    written = make_raw(raw_dir(), n_per_class=3, n_test=1, corrupt=False)
    out = _build(image_size=20)
    x = np.load(out / "train_20.npy")
    names = read_json(out / "train_names.json")
    first = written["train"][0]  # 48 x 40, stored rotated with EXIF orientation 6
    with Image.open(raw_dir() / first) as im:
        assert im.size == (SIZES[0][1], SIZES[0][0])  # stored transposed
    row = x[names.index(first)]
    expected, _ = features.decode_image(raw_dir() / first, 20)
    np.testing.assert_array_equal(row, expected)
    # and the decoded image is upright: the pink disc is centred, the corners are dark background
    assert row[8:12, 8:12].mean() > row[:3, :3].mean() + 60


def test_cache_is_idempotent_and_tracks_parameters(project_dirs, caplog):
    make_raw(raw_dir(), n_per_class=3, n_test=2)
    out = _build()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with caplog.at_level(logging.INFO):
        _build()
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    _build(image_size=16)  # a parameter changed: rebuilt
    assert np.load(out / "train_16.npy").shape == (9, 16, 16, 3)
    assert read_json(out / "features.lock.json")["params_used"]["image_size"] == 16
    # no temp files left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_large_jpeg_uses_draft_and_fits(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1536), (200, 120, 130)).save(path, quality=80)
    t0 = time.perf_counter()
    array, _ = features.decode_image(path, 32)
    assert array.shape == (32, 32, 3)
    assert time.perf_counter() - t0 < 2.0
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        assert im.size == (256, 192)  # the decoder itself shrinks by 8


def test_fit_square_crop_and_pad():
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    cropped = np.asarray(features.fit_square(image, 10, "crop"))
    padded = np.asarray(features.fit_square(image, 10, "pad"))
    assert cropped.shape == padded.shape == (10, 10, 3)
    assert cropped[..., 0].min() > 150                      # all image
    assert padded[0, :, 0].max() < 30 and padded[5, :, 0].min() > 150  # black bars above and below


def test_crop_option_changes_the_stage(project_dirs):
    make_raw(raw_dir(), n_per_class=3, n_test=1, corrupt=False)
    out = _build(crop=True)
    lock = read_json(out / "features.lock.json")
    assert lock["params_used"]["crop"] is True and "crop_fallbacks" in lock
    assert np.load(out / "train_24.npy").shape == (9, 24, 24, 3)


def test_missing_raw_and_size_mismatch_are_clear(project_dirs):
    with pytest.raises(StageError, match="make data COMP=cervix"):
        _build()
    with pytest.raises(StageError, match="make features COMP=cervix"):
        features.load_tensors("sample")
    make_raw(raw_dir(), n_per_class=3, n_test=1)
    _build()
    with pytest.raises(StageError, match="--image-size 24"):
        features.load_tensors("sample", image_size=64)
    assert features.load_tensors("sample").x_train.shape == (9, 24, 24, 3)


def test_too_few_images_for_the_folds(project_dirs):
    make_raw(raw_dir(), n_per_class=2, n_test=1, corrupt=False)
    with pytest.raises(StageError, match="--n-folds 2"):
        _build(n_folds=5)


# ---------------------------------------------------------------------------------------------- crop


def _noisy_grey(width=200, height=150, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def test_crop_box_contains_the_red_blob():
    array = _noisy_grey()
    image = Image.fromarray(array)
    blob = (120, 20, 180, 80)  # left, upper, right, lower
    ImageDraw.Draw(image).ellipse(blob, fill=(210, 60, 80))
    box, found = crop.find_cervix_box(image)
    assert found
    left, upper, right, lower = box
    assert left <= blob[0] and upper <= blob[1] and right >= blob[2] and lower >= blob[3]
    assert right - left == lower - upper  # square
    assert (right - left) < 0.8 * 150  # and tight: not the whole image
    assert 0 <= left and 0 <= upper and right <= 200 and lower <= 150


def test_crop_falls_back_to_the_centre_without_red():
    box, found = crop.find_cervix_box(Image.fromarray(_noisy_grey()))
    assert not found
    assert box == crop.centre_box(200, 150)
    left, upper, right, lower = box
    assert right - left == lower - upper == 120  # 0.8 x the short side
    assert (left + right) / 2 == pytest.approx(100, abs=1) and (upper + lower) / 2 == pytest.approx(75, abs=1)


def test_crop_ignores_specks_and_prefers_the_big_blob():
    image = Image.fromarray(_noisy_grey(seed=1))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 16, 16), fill=(220, 40, 50))        # a speck of blood
    draw.ellipse((60, 50, 140, 130), fill=(215, 120, 140))    # the pink cervix
    box, found = crop.find_cervix_box(image)
    assert found
    left, upper, right, lower = box
    assert left <= 60 and right >= 140 and upper <= 50 and lower >= 130
    assert left > 16 or upper > 16  # the speck did not stretch the box


def test_otsu_splits_two_modes():
    values = np.concatenate([np.full(100, 0.1), np.full(100, 0.5)])
    t = crop.otsu_threshold(values)
    assert 0.1 <= t < 0.5
