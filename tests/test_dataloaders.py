"""Dataloading: real-data counts, corrupt inputs, the scan cache, batches, rect shapes, LoadImages."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data.dataset import LoadImagesAndLabels
from utils.data.label_scan import scan_labels
from utils.data.loaders import create_dataloader
from utils.data.sources import LoadImages, find_images
from utils.logger import LOGGER
from utils.paths import ROOT

MED = ROOT.parent / "shared" / "datasets" / "Regurgitation-YOLODataset-1new"
MED_LABEL = "3 0.389 0.415 0.522 0.415 0.522 0.572 0.389 0.572\n\n0 1 0"
needs_med = pytest.mark.skipif(not MED.is_dir(), reason="shared med dataset not available")


@pytest.fixture(autouse=True)
def _caches_in_tmp(cache_in_tmp):
    """Every test here keeps its scan caches in its own temporary folder (conftest.cache_in_tmp)."""
    return cache_in_tmp


@pytest.fixture
def log_records():
    """Messages the project logger emits (it does not propagate, so caplog cannot see them)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    yield records
    LOGGER.removeHandler(handler)


def write_image(path: Path, w: int = 430, h: int = 320, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def write_label(image: Path, text: str) -> None:
    label = image.parent.parent / "labels" / (image.stem + ".txt")
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text(text)


def make_dataset(root: Path, n: int = 6, w: int = 430, h: int = 320) -> Path:
    """n images with one box (cls i%4, cx 0.5, cy 0.5, w 0.2, h 0.5) and view i%3; image 0 has no view line."""
    for i in range(n):
        image = write_image(root / "images" / f"im{i}.png", w, h, seed=i)
        view = "" if i == 0 else "\n\n" + " ".join("1" if k == i % 3 else "0" for k in range(3))
        write_label(image, f"{i % 4} 0.5 0.5 0.2 0.5{view}")
    return root / "images"


# ---------------------------------------------------------------- the real data

@needs_med
@pytest.mark.parametrize("n_views", [None, 3])
def test_med_valid_has_one_box_per_image(n_views, cache_in_tmp):
    beside = MED / "valid" / "labels.cache"  # a copy of the data may ship a foreign cache here: it must not match
    before = beside.stat().st_mtime_ns if beside.exists() else None
    result = scan_labels(find_images(MED / "valid" / "images"), nc=4, n_views=n_views)
    assert len(result.img_files) == 183
    assert sum(len(boxes) for boxes in result.labels) == 183  # not 366: the view line is no box
    assert result.n_corrupt == 0 and result.n_backgrounds == 0 and result.messages == []
    views = Counter(result.views.tolist())
    if n_views is None:
        assert views == {-1: 183}
    else:
        assert (views[0], views[1], views[2]) == (28, 78, 77)
    assert (beside.stat().st_mtime_ns if beside.exists() else None) == before  # read-only data: never written
    assert Path(result.cache_path).parent == cache_in_tmp


@needs_med
def test_med_train_counts():
    result = scan_labels(find_images(MED / "train" / "images"), nc=4, n_views=3)
    assert len(result.img_files) == 1042
    views = Counter(result.views.tolist())
    assert views[-1] == 2 and (views[0], views[1], views[2]) == (111, 555, 374)
    classes = np.bincount(np.concatenate(result.labels)[:, 0].astype(int), minlength=4)
    assert classes.tolist() == [321, 318, 84, 319]


# ---------------------------------------------------------------- corrupt inputs

def test_scan_skips_and_reports_corrupt_files(tmp_path, log_records):
    images = tmp_path / "data" / "images"
    good = write_image(images / "good.png")
    write_label(good, MED_LABEL)
    write_image(images / "nolabel.png")  # background, no label file
    background = write_image(images / "background.png")
    write_label(background, "")
    (images / "zero.png").write_bytes(b"")
    truncated_png = write_image(images / "trunc.png", seed=5)
    truncated_png.write_bytes(truncated_png.read_bytes()[:300])
    cut_jpeg = images / "cut.jpg"
    cv2.imwrite(str(cut_jpeg), np.full((40, 40, 3), 90, np.uint8))
    cut_jpeg.write_bytes(cut_jpeg.read_bytes()[:-2])
    write_image(images / "tiny.png", 5, 5)
    bad_row = write_image(images / "badrow.png")
    write_label(bad_row, "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n0.1 0.5 0.5 0.2 0.2\n\n0 1 0")
    duplicate = write_image(images / "dup.png")
    write_label(duplicate, "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")

    result = scan_labels(find_images(images), nc=4, n_views=3)

    kept = sorted(Path(f).name for f in result.img_files)
    assert kept == ["background.png", "dup.png", "good.png", "nolabel.png"]
    assert result.n_corrupt == 5
    assert (result.n_found, result.n_missing, result.n_empty, result.n_duplicates) == (3, 1, 1, 1)
    corrupt = [m for m in result.messages if "ignoring corrupt image/label" in m]
    assert len(corrupt) == 5
    expectations = {
        "zero.png": "cannot identify",
        "trunc.png": "runcated",
        "cut.jpg": "truncated JPEG",
        "tiny.png": "5x5",
        "badrow.png": "line 2",
    }
    for name, reason in expectations.items():
        (message,) = [m for m in corrupt if m.startswith(str(images / name))]
        assert reason in message, message
    assert any("dup.txt line 2" in m and "duplicate" in m for m in result.messages)
    logged = [r.getMessage() for r in log_records if r.levelno == logging.WARNING]
    assert sum("ignoring corrupt image/label" in m for m in logged) == 5
    summary = [r.getMessage() for r in log_records if "backgrounds" in r.getMessage()]
    assert summary == [f"Scanning {tmp_path / 'data' / 'labels'}... 4 images, 2 backgrounds, 5 corrupt"]
    # the writable dataset gets its cache beside the labels folder
    assert Path(result.cache_path) == tmp_path / "data" / "labels.cache"


def test_single_cls_and_class_limit(tmp_path):
    image = write_image(tmp_path / "images" / "a.png")
    write_label(image, "7 0.5 0.5 0.2 0.2\n")
    assert scan_labels([str(image)], nc=4).n_corrupt == 1  # class 7 >= nc
    result = scan_labels([str(image)], nc=4, single_cls=True)  # every class becomes 0, nc not checked
    assert result.n_corrupt == 0 and result.labels[0][:, 0].tolist() == [0.0]


# ---------------------------------------------------------------- cache

def test_cache_is_reused_then_rebuilt_when_stale_or_broken(tmp_path):
    images = make_dataset(tmp_path / "d", n=3)
    first = scan_labels(find_images(images), nc=4, n_views=3)
    assert not first.from_cache and Path(first.cache_path).is_file()
    data = np.load(first.cache_path, allow_pickle=False)  # plain arrays, no pickle
    assert set(data.files) >= {"hash", "img_files", "boxes", "views"}

    second = scan_labels(find_images(images), nc=4, n_views=3)
    assert second.from_cache
    assert second.img_files == first.img_files and np.array_equal(second.views, first.views)
    for a, b in zip(first.labels, second.labels):
        np.testing.assert_array_equal(a, b)

    assert not scan_labels(find_images(images), nc=4, n_views=None).from_cache  # options are in the key

    (tmp_path / "d" / "labels" / "im1.txt").write_text("2 0.5 0.5 0.4 0.4\n\n0 0 1 ")  # stale
    third = scan_labels(find_images(images), nc=4, n_views=3)
    assert not third.from_cache and third.views.tolist() == [-1, 2, 2]

    Path(third.cache_path).write_bytes(b"not a cache")  # broken: ignored, rebuilt
    fourth = scan_labels(find_images(images), nc=4, n_views=3)
    assert not fourth.from_cache and fourth.views.tolist() == [-1, 2, 2]


# ---------------------------------------------------------------- discovery

def test_find_images_folder_list_glob(tmp_path):
    a = write_image(tmp_path / "set" / "images" / "b.png")
    b = write_image(tmp_path / "set" / "images" / "sub" / "a.jpg")
    (tmp_path / "set" / "images" / "notes.md").write_text("x")
    assert find_images(tmp_path / "set" / "images") == sorted([str(a), str(b)])
    listing = tmp_path / "set" / "list.txt"
    listing.write_text("./images/b.png\n./images/sub/a.jpg\n")
    assert find_images(listing) == sorted([str(a), str(b)])
    assert find_images(str(tmp_path / "set" / "images" / "*.png")) == [str(a)]
    assert find_images([str(a), str(b)]) == sorted([str(a), str(b)])


def test_find_images_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        find_images(tmp_path / "empty")


# ---------------------------------------------------------------- dataset and loader

def test_batches_shapes_dtypes_targets_views(tmp_path):
    images = make_dataset(tmp_path, n=6)
    loader, dataset = create_dataloader(images, 320, 4, 32, workers=0, n_views=3, nc=4)
    assert len(dataset) == 6 and not dataset.mosaic
    imgs, targets, views, paths, shapes = next(iter(loader))
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 3, 320, 320)
    assert targets.dtype == torch.float32 and targets.shape == (4, 6)
    assert targets[:, 0].tolist() == [0, 1, 2, 3]
    assert targets[:, 1].tolist() == [0, 1, 2, 3]
    assert views.dtype == torch.long and views.tolist() == [-1, 1, 2, 0]  # im0 has no view line
    assert [Path(p).name for p in paths] == ["im0.png", "im1.png", "im2.png", "im3.png"]
    # 430x320 -> 320x239 (h: 238.14 rounded up, as YOLOv5 loads images), padded to 320: 81 rows, 40.5 a side
    (h0, w0), ((gain_h, gain_w), (pad_w, pad_h)) = shapes[0]
    assert (h0, w0) == (320, 430) and (pad_w, pad_h) == (0.0, 40.5)
    assert gain_h == pytest.approx(239 / 320) and gain_w == pytest.approx(320 / 430)
    # box cy 0.5, h 0.5 of 239 rows -> (40.5 + 119.5) / 320 = 0.5, 119.5 / 320
    np.testing.assert_allclose(targets[0, 2:].numpy(), [0.5, 0.5, 0.2, 119.5 / 320], atol=1e-6)


def test_rect_batches_are_stride_multiples(tmp_path):
    images = make_dataset(tmp_path, n=4)
    loader, dataset = create_dataloader(images, 320, 2, 32, rect=True, workers=0, n_views=3, nc=4)
    assert dataset.batch_shapes.tolist() == [[256, 320], [256, 320]]  # ceil(320 * 0.744 / 32) * 32 = 256 rows
    imgs, targets, _, _, shapes = next(iter(loader))
    assert imgs.shape == (2, 3, 256, 320)
    assert shapes[0][1][1] == (0.0, 8.5)  # (256 - 239) / 2
    # cy = (8.5 + 119.5) / 256 = 0.5, h = 119.5 / 256
    np.testing.assert_allclose(targets[0, 2:].numpy(), [0.5, 0.5, 0.2, 119.5 / 256], atol=1e-6)


def test_rect_mixed_orientations_sorted_by_aspect(tmp_path):
    write_image(tmp_path / "images" / "wide.png", 200, 100)
    write_image(tmp_path / "images" / "tall.png", 100, 200)
    dataset = LoadImagesAndLabels(tmp_path / "images", 128, batch_size=1, rect=True, stride=32)
    assert [Path(f).name for f in dataset.img_files] == ["wide.png", "tall.png"]
    assert dataset.batch_shapes.tolist() == [[64, 128], [128, 64]]
    assert dataset[0][0].shape == (3, 64, 128) and dataset[1][0].shape == (3, 128, 64)


def test_rect_with_shuffle_warns_and_keeps_order(tmp_path, log_records):
    images = make_dataset(tmp_path, n=4)
    loader, _ = create_dataloader(images, 320, 2, 32, rect=True, shuffle=True, workers=0)
    assert any("shuffle" in r.getMessage() for r in log_records if r.levelno == logging.WARNING)
    assert [Path(p).name for batch in loader for p in batch[3]] == [f"im{i}.png" for i in range(4)]


def test_same_seed_same_order(tmp_path):
    images = make_dataset(tmp_path, n=8)

    def order(seed: int) -> list[str]:
        loader, _ = create_dataloader(images, 64, 2, 32, shuffle=True, workers=0, seed=seed)
        return [Path(p).name for batch in loader for p in batch[3]]

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_workers_deliver_the_same_batches(tmp_path):
    images = make_dataset(tmp_path, n=4)
    loader, _ = create_dataloader(images, 64, 2, 32, workers=2, n_views=3)
    assert loader.num_workers == 2 and loader.persistent_workers
    views = torch.cat([batch[2] for batch in loader])
    assert views.tolist() == [-1, 1, 2, 0]


def test_mosaic_samples_have_no_view(tmp_path):
    images = make_dataset(tmp_path, n=6)
    mosaic = LoadImagesAndLabels(images, 128, augment=True, hyp={"mosaic": 1.0}, n_views=3, nc=4)
    plain = LoadImagesAndLabels(images, 128, augment=True, hyp={"mosaic": 0.0, "fliplr": 0.0}, n_views=3, nc=4)
    assert mosaic.mosaic and not plain.mosaic
    for i in range(len(mosaic)):
        img, labels, view, _, shapes = mosaic[i]
        assert img.shape == (3, 128, 128) and view.item() == -1 and shapes is None
        if len(labels):
            assert (labels[:, 2:] >= 0).all() and (labels[:, 2:] <= 1).all()
    assert [plain[i][2].item() for i in range(6)] == [-1, 1, 2, 0, 1, 2]


def test_ram_cache_matches_disk_reads(tmp_path, cache_in_tmp):
    images = make_dataset(tmp_path, n=3)
    fresh = LoadImagesAndLabels(images, 160)
    in_ram = LoadImagesAndLabels(images, 160, cache_images="ram")
    on_disk = LoadImagesAndLabels(images, 160, cache_images="disk")
    assert all(im is not None for im in in_ram.ims)
    assert len(list((cache_in_tmp / "images").glob("*.npy"))) == 3
    for i in range(3):
        expected, hw0, hw = fresh.load_image(i)
        assert (hw0, hw) == ((320, 430), (120, 160))  # 119.07 rows rounded up
        assert np.array_equal(in_ram.load_image(i)[0], expected)
        assert np.array_equal(on_disk.load_image(i)[0], expected)


def test_collate_sets_image_index():
    sample = lambda n: (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(n, 6), torch.tensor(1), "p", None)
    imgs, targets, views, paths, shapes = LoadImagesAndLabels.collate_fn([sample(2), sample(0), sample(1)])
    assert imgs.shape == (3, 3, 8, 8) and targets[:, 0].tolist() == [0, 0, 2]
    assert views.tolist() == [1, 1, 1] and paths == ("p", "p", "p")


# ---------------------------------------------------------------- LoadImages

@needs_med
def test_load_images_folder_and_video(tmp_path, log_records):
    names = [
        "Z2liwqVnacKV-unnamed_1_1.mp4-6.png",  # 430 x 320
        "ZmNqwqZta2Vk-unnamed_1_1.mp4-14.png",  # 700 x 495
        "amllwqdpbGo=-unnamed_1_1.mp4-27.png",  # 800 x 556
    ]
    folder = tmp_path / "source"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(MED / "valid" / "images" / name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for value in (40, 200):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()

    items = list(LoadImages(folder, img_size=320, stride=32))
    assert len(items) == 5  # 3 images + 2 frames; the broken image is skipped with a warning
    assert any("broken.png" in r.getMessage() for r in log_records if r.levelno == logging.WARNING)
    # long side 320, short side padded to the next multiple of 32: 238 -> 256, 226 -> 256, 222 -> 224
    expected_rows = [256, 256, 224]
    for (path, img, im0, cap, info), rows in zip(items[:3], expected_rows):
        assert img.shape == (3, rows, 320) and img.dtype == np.uint8 and img.flags.c_contiguous
        assert cap is None and info.startswith("image ") and info.endswith(f"{path}: ")
    assert items[0][2].shape == (320, 430, 3)
    assert [item[4] for item in items[:3]] == [f"image {i}/5 {folder / name}: " for i, name in enumerate(names, 1)]
    for frame, (path, img, im0, cap, info) in enumerate(items[3:], 1):
        assert path == str(video) and cap is not None
        assert img.shape == (3, 256, 320) and im0.shape == (48, 64, 3)  # 64x48 x5 = 320x240 -> 256 rows
        assert info == f"video 5/5 (frame {frame}/2) {video}: "
    # RGB order: a BGR pixel (b=10, g=20, r=30) comes out as (30, 20, 10)
    single = tmp_path / "pixel.png"
    cv2.imwrite(str(single), np.tile(np.array([10, 20, 30], np.uint8), (32, 32, 1)))
    (_, img, _, _, info), = list(LoadImages(single, img_size=32))
    assert img[:, 16, 16].tolist() == [30, 20, 10] and info == f"image 1/1 {single}: "


def test_load_images_missing_source():
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        LoadImages("/tmp/does_not_exist_dir_for_test")
