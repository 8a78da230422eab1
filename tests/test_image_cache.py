"""--cache auto/ram/disk/off: the choice, the memory arithmetic, the auto decision and its log line."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_dataloaders import make_dataset
from utils.data.dataset import LoadImagesAndLabels
from utils.data.image_cache import cache_choice, ram_needed, resolve_cache


@pytest.mark.parametrize("value,expected", [(None, "off"), (False, "off"), (True, "ram"), ("ram", "ram"),
                                            ("disk", "disk"), ("auto", "auto"), ("off", "off"), ("None", "off"),
                                            ("false", "off"), ("", "off"), ("RAM", "ram")])
def test_cache_choice(value, expected):
    assert cache_choice(value) == expected


def test_cache_choice_refuses_other_words():
    with pytest.raises(ValueError, match="--cache memory: expected one of auto, ram, disk, off"):
        cache_choice("memory")


def test_ram_needed_by_hand():
    # rounded up, as images are loaded: 430x320 at 320 -> 320 x 239 (238.14); 800x556 -> 320 x 223 (222.4); 3 bytes each
    assert ram_needed(np.array([[430, 320], [800, 556]]), 320) == 3 * (320 * 239 + 320 * 223)
    assert ram_needed(np.array([[100, 200]]), 64) == 3 * 32 * 64  # portrait: the height is the long side
    assert ram_needed(np.zeros((0, 2)), 320) == 0


def test_auto_caches_when_it_fits_comfortably_and_says_so(messages):
    shapes = np.array([[430, 320]] * 1000)  # 1000 x 320 x 239 x 3 = 229.4 MB
    assert resolve_cache("auto", shapes, 320, "train: ", memory=10**9, processes=1) == "ram"  # 23 % of 1 GB
    assert "caching images in RAM: 0.23 GB of 1.0 GB available (--cache off to turn it off)" in messages[-1]
    assert resolve_cache("auto", shapes, 320, "train: ", memory=8 * 10**8, processes=1) == "off"  # 29 % of 0.8 GB
    assert "not caching images: 0.23 GB needed, 0.8 GB available (--cache ram to force it)" in messages[-1]
    assert resolve_cache("auto", shapes, 320, memory=10**9, processes=2) == "off"  # two torchrun ranks, two copies
    assert resolve_cache("auto", shapes, 320, memory=None, processes=1) in ("ram", "off")  # this machine's memory


def test_explicit_choices_are_kept_whatever_the_memory(messages):
    shapes = np.array([[430, 320]] * 1000)
    assert resolve_cache("ram", shapes, 320, memory=1, processes=1) == "ram"
    assert resolve_cache("off", shapes, 320, memory=10**12, processes=1) == "off"
    assert resolve_cache(None, shapes, 320, memory=10**12, processes=1) == "off"
    assert messages == []  # only auto explains itself


def test_auto_cached_dataset_gives_the_same_samples(tmp_path, cache_in_tmp):
    images = make_dataset(tmp_path, n=3)
    fresh = LoadImagesAndLabels(images, 160, augment=False, cache_images="off")
    auto = LoadImagesAndLabels(images, 160, augment=False, cache_images="auto")
    assert fresh.cache == "off" and fresh.ims == [None] * 3
    assert auto.cache == "ram" and all(im is not None for im in auto.ims)  # 3 small images fit anywhere
    for i in range(3):
        a, b = fresh[i], auto[i]
        assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
