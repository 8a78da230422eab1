"""--rect-shuffle: rectangular letterbox shapes per image, batches of one shape, a fresh order every epoch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.data.loaders import AspectBatchSampler, create_dataloader


def test_sampler_batches_share_a_shape_cover_everything_and_reshuffle():
    shapes = np.array([[256, 320]] * 7 + [[224, 320]] * 3)
    sampler = AspectBatchSampler(shapes, batch_size=3, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 3 + 1  # ceil(7/3) + ceil(3/3)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(10))
        for batch in epoch:
            assert len({tuple(shapes[i]) for i in batch}) == 1
    assert first != second  # a new order every epoch
    assert list(AspectBatchSampler(shapes, 3, seed=0)) == first  # deterministic for a seed


def test_med_images_train_at_256x320(med_root: Path, tmp_path: Path):
    images = sorted((med_root / "train" / "images").glob("*.png"))[:6]
    listing = tmp_path / "six.txt"
    listing.write_text("\n".join(map(str, images)) + "\n")
    loader, dataset = create_dataloader(str(listing), 320, 3, 32, hyp={}, augment=True, workers=0, shuffle=True,
                                        rect_shuffle=True, nc=4, n_views=3)
    sizes = {tuple(int(v) for v in reversed(wh)) for wh in dataset.shapes}  # (h, w) of the originals
    assert sizes == {(320, 430)}, sizes  # the first files of the split are all 430x320
    seen = 0
    for imgs, targets, views, paths, _ in loader:
        assert tuple(imgs.shape[-2:]) == (256, 320)
        assert len(targets) and (targets[:, 2:4] <= 1).all() and (targets[:, 2:4] >= 0).all()
        seen += imgs.shape[0]
    assert seen == 6
