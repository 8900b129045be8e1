"""`image_cache: png` (issue 23): the decoded cache's images kept as lossless PNGs in one blob, decoded per batch;
the same pixels, so the same run, bit for bit; a blob cut short is never read."""
from __future__ import annotations

from copy import deepcopy

import numpy as np
import torch

from fold0123.common import rundir
from fold0123.data.encoded import EncodedImages, build_encoded_cache, is_whole
from fold0123.data.images import build_image_cache
from fold0123.data.photos import photo_cache
from fold0123.data.layout import read_test, read_train
from fold0123.engine.trainer import train
from fold0123.models.checkpoints import read_checkpoint
from tests.conftest import make_dataroot, tiny_config


def test_the_blob_holds_the_decoded_caches_pixels_and_a_cut_blob_is_rebuilt(tmp_path):
    dataroot = make_dataroot(tmp_path / "data")
    ids = list(read_train(dataroot)["object_id"]) + list(read_test(dataroot)["object_id"])
    decoded = build_image_cache(dataroot, ids, (24, 32), tmp_path / "cache", workers=1)
    encoded = build_encoded_cache(dataroot, ids, (24, 32), tmp_path / "cache", workers=2, chunk=8)
    assert encoded.decoded == len(ids) and encoded.array.shape == decoded.array.shape == (len(ids), 24, 32, 3)
    rows = np.array([5, 0, 17, 3])
    assert np.array_equal(encoded.array[rows], decoded.array[rows])
    assert np.array_equal(encoded.array[2:9], decoded.array[2:9]) and np.array_equal(encoded.array[7], decoded.array[7])
    copy = deepcopy(encoded.array)  # through __getstate__/__setstate__, as a spawned worker gets it: mapped again
    assert isinstance(copy, EncodedImages) and np.array_equal(copy[rows], decoded.array[rows])
    assert build_encoded_cache(dataroot, ids, (24, 32), tmp_path / "cache").decoded == 0  # reused
    path = encoded.path
    path.write_bytes(path.read_bytes()[:-5])  # a blob cut short: not whole, so built again
    assert not is_whole(path, len(ids))
    again = build_encoded_cache(dataroot, ids, (24, 32), tmp_path / "cache")
    assert again.decoded == len(ids) and np.array_equal(again.array[rows], decoded.array[rows])


def test_a_run_on_the_encoded_cache_is_the_run_on_the_decoded_one_bit_for_bit(tmp_path):
    torch.set_num_threads(1)
    dataroot = make_dataroot(tmp_path / "data")
    from fold0123.data.folds import write_folds
    write_folds(dataroot, k=3, batch_size=None, seed=0)
    weights = {}
    for cache in ("decoded", "png"):
        cfg = tiny_config("target", dataroot, tmp_path / cache, "transfer_from=null", "epochs=1",
                          f"image_cache={cache}")
        assert photo_cache(cfg).path.name.endswith(".npy" if cache == "decoded" else ".png.blob")
        run = train(cfg, "3fold0", device="cpu", progress=False)
        weights[cache] = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    assert weights["png"].keys() == weights["decoded"].keys()
    assert all(torch.equal(weights["png"][k], weights["decoded"][k]) for k in weights["decoded"])
