"""What a run will write, said before it writes it (issue 23): the cache's size as built, the eval outputs per
epoch, and a cache the disk cannot hold refused with the numbers before anything is written."""
from __future__ import annotations


import numpy as np
import pytest

from fold0123.common.io import DiskFullError
from fold0123.common.costs import describe_costs, evaluated_epochs
from fold0123.data.costs import run_costs
from fold0123.data.images import build_image_cache, cache_bytes, cached_images
from fold0123.data.layout import read_split, read_test, read_train
from tests.conftest import make_dataroot, make_recipe_root, tiny_config


def test_the_estimate_is_the_size_of_the_cache_built(tmp_path):
    dataroot = make_dataroot(tmp_path / "data")
    ids = list(read_train(dataroot)["object_id"]) + list(read_test(dataroot)["object_id"])
    for size in (32, (24, 40)):
        cache = build_image_cache(dataroot, ids, size, tmp_path / "cache", workers=1)
        assert cache.path.stat().st_size == cache_bytes(len(ids), size)


def test_a_cache_the_disk_cannot_hold_is_refused_with_the_numbers_before_any_write(tmp_path):
    ids = [f"id{i}" for i in range(1_000_000)]  # 3 TB at 1000 px: more than this disk has
    path = tmp_path / "cache" / "images_1000_x.npy"
    with pytest.raises(DiskFullError, match=r"images_1000_x.npy: the image cache of 1000000 photos at 1000x1000 "
                                             r"needs 3000000.0 MB and .*cache has [0-9.]+ MB free") as err:
        cached_images(path, ids, 1000, [], lambda job: np.zeros((0, 1000, 1000, 3), np.uint8))
    assert "\n" not in str(err.value)
    assert [p.name for p in path.parent.iterdir()] == [path.name + ".lock"]  # the builders' lock only


def test_the_costs_of_an_accv_sized_competition_read_as_the_issue_computed_them():
    """5,000 classes, 50k train and 90k test images at 448 px: 60 GB of cache before the first step, and 14.4 GB of
    test outputs per evaluated epoch of one row, as float32 over 8 views."""
    line = describe_costs(140_000, 448, {"oof": 16_667, "test": 90_000}, 5_000, evaluated_epochs(20, 1))
    assert line.startswith("image cache: 140000 photos at 448x448: 84.3 GB; eval outputs: 17.1 GB per evaluated "
                           "epoch (oof 16667 + test 90000 rows x 8 views x 5000 float32), 341.3 GB over 20 "
                           "evaluated epochs")
    assert evaluated_epochs(8, 8) == 1 and evaluated_epochs(10, 4) == 3 and evaluated_epochs(0, 1) == 0
    # the scalable setting: the view mean in float16 is 16x smaller, n x K x 2 B
    line = describe_costs(140_000, 448, {"oof": 16_667, "test": 90_000}, 5_000, 20, "mean", "float16")
    assert "eval outputs: 1.1 GB per evaluated epoch (oof 16667 + test 90000 rows x 1 view x 5000 float16)" in line
    line = describe_costs(140_000, 448, {"test": 90_000}, 5_000, 20, image_cache="png")
    assert line.startswith("image cache: 140000 photos at 448x448: kept as PNG (decoded: 84.3 GB); ")


def test_a_run_states_its_costs_from_its_own_tables(tmp_path):
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    cfg = tiny_config("onehot", dataroot, tmp_path / "runs", "epochs=3", "eval.every=2")
    n = len(read_train(dataroot)) + len(read_test(dataroot))
    held = len(read_split(dataroot, "3fold0")[1])
    line = run_costs(cfg, "3fold0", 4)
    assert line.startswith(f"image cache: {n} photos at 32x32: ") and f"oof {held} + test " in line
    assert "x 8 views x 4 float32" in line and "over 2 evaluated epochs" in line
