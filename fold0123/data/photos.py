"""The images a run reads: every train and test photo of the dataroot at the config's size, decoded once into
the uint8 memmap (data.images) or, `image_cache: png`, kept as lossless PNGs (data.encoded); the same pixels
either way."""
from __future__ import annotations

from fold0123.common import rundir
from fold0123.common.schema import RunConfig
from fold0123.data.encoded import build_encoded_cache
from fold0123.data.images import ImageCache, build_image_cache, default_workers
from fold0123.data.layout import read_test, read_train


def photo_cache(cfg: RunConfig, ids=None) -> ImageCache:
    """The uint8 cache at the config's size over every train and test photo of the dataroot (plus `ids` the
    tables lack: pseudo or extra rows), so training and evaluation of every split read the same memory-mapped
    file in common.rundir.cache_dir (built once, reused by the other runs); `image_cache: png` keeps the same
    images encoded (data.encoded)."""
    train = read_train(cfg.dataroot)
    every_id = list(train["object_id"]) + list(read_test(cfg.dataroot, train)["object_id"])
    if ids is not None:
        known = set(every_id)
        every_id += [i for i in dict.fromkeys(ids) if i not in known]
    if cfg.image_cache == "png":
        return build_encoded_cache(cfg.dataroot, every_id, cfg.image_size, rundir.cache_dir(cfg.checkpoints_dir),
                                   fit=cfg.resize, workers=default_workers())
    return build_image_cache(cfg.dataroot, every_id, cfg.image_size, rundir.cache_dir(cfg.checkpoints_dir),
                             fit=cfg.resize)
