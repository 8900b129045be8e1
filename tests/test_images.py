"""The decode cache: each JPEG is decoded once, odd JPEGs come out RGB, bad ones fail naming the file."""
import multiprocessing
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fold0123.data.datasets import ImageDataset, normalize
from fold0123.data.images import build_image_cache, load_image
from fold0123.data.layout import LayoutError, read_train


def test_cache_decodes_once_and_is_reused(dataroot, tmp_path):
    ids = list(read_train(dataroot)["object_id"])
    first = build_image_cache(dataroot, ids, 16, tmp_path / "cache")
    assert first.decoded == len(ids) and first.array.shape == (len(ids), 16, 16, 3)
    assert first.path.name.startswith("images_16_") and first.path.suffix == ".npy"
    assert isinstance(first.array, np.memmap)
    stamp = os.stat(first.path).st_mtime_ns
    second = build_image_cache(dataroot, ids, 16, tmp_path / "cache")
    assert second.decoded == 0 and second.path == first.path and os.stat(second.path).st_mtime_ns == stamp
    assert np.array_equal(second.array[second.index[ids[5]]], load_image(dataroot / "photos" / f"{ids[5]}.jpg", 16))
    assert second.index[ids[5]] == 5 and second.ids == ids
    # another id list or size is another file
    assert build_image_cache(dataroot, ids[:10], 16, tmp_path / "cache").path != first.path
    assert build_image_cache(dataroot, ids, 8, tmp_path / "cache").decoded == len(ids)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if ".tmp." in p.name) == []


def _build(args):
    dataroot, ids, cache_dir = args
    return build_image_cache(dataroot, ids, 16, cache_dir, workers=1).decoded


def test_a_killed_builds_temp_file_is_removed_and_a_full_disk_is_an_error_not_a_bus_error(dataroot, tmp_path,
                                                                                           monkeypatch):
    """Found by tests/test_faults.py: a build killed half way left `images_*.npy.tmp.<pid>` (megabytes at real
    sizes) that nothing removed, and a disk too full for the memmap killed the process with SIGBUS. Now the next
    build removes dead writers' temp files, and the space is allocated before any page is written."""
    import errno

    from fold0123.common.io import DiskFullError
    from fold0123.data import images

    ids = list(read_train(dataroot)["object_id"])
    cache = tmp_path / "cache"
    cache.mkdir()
    orphan = cache / "images_64_0123456789abcdef.npy.tmp.999999999"  # no such PID
    orphan.write_bytes(b"half a cache")
    live = cache / f"images_64_0123456789abcdef.npy.tmp.{os.getpid()}"  # a live writer's: left alone
    live.write_bytes(b"being written")
    build_image_cache(dataroot, ids, 16, cache)
    assert not orphan.exists() and live.exists()

    reserved = []

    def full(fd, offset, length):
        reserved.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(images.os, "posix_fallocate", full)
    with pytest.raises(DiskFullError, match=r"images_8_.*\.npy: no space left on the device"):
        build_image_cache(dataroot, ids, 8, cache)
    assert reserved and reserved[0] >= len(ids) * 8 * 8 * 3
    assert [p.suffix for p in cache.iterdir() if p.name.startswith("images_8_")] == [".lock"]  # no npy, no temp


def test_runs_started_together_decode_once(dataroot, tmp_path):
    ids = list(read_train(dataroot)["object_id"])
    with multiprocessing.get_context("fork").Pool(2) as pool:
        decoded = pool.map(_build, [(dataroot, ids, tmp_path / "cache")] * 2)
    assert sorted(decoded) == [0, len(ids)]


def test_pool_decoding_gives_the_same_array(dataroot, tmp_path):
    ids = list(read_train(dataroot)["object_id"])
    serial = build_image_cache(dataroot, ids, 16, tmp_path / "a")
    pooled = build_image_cache(dataroot, ids, 16, tmp_path / "b", workers=2, chunk=8)
    assert np.array_equal(serial.array, pooled.array)


def test_greyscale_and_cmyk_jpegs_become_rgb(tmp_path):
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(tmp_path / "photos" / "grey.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "CMYK").save(tmp_path / "photos" / "cmyk.jpg")
    assert Image.open(tmp_path / "photos" / "cmyk.jpg").mode == "CMYK"
    cache = build_image_cache(tmp_path, ["grey", "cmyk"], 20, tmp_path / "cache")
    grey = cache.array[cache.index["grey"]]
    assert grey.shape == (20, 20, 3) and np.array_equal(grey[..., 0], grey[..., 1])
    cmyk = cache.array[cache.index["cmyk"]]
    assert cmyk.shape == (20, 20, 3) and cmyk.std() > 10


def test_non_square_photo_is_letterboxed_not_stretched(tmp_path):
    pixels = np.full((20, 40, 3), 255, np.uint8)  # white border ...
    pixels[5:15, 5:35] = (200, 0, 0)  # ... around a wide red bar
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    padded = load_image(tmp_path / "wide.png", 40)
    assert padded.shape == (40, 40, 3)
    assert padded[:8].min() > 240  # padding in the border colour above the photo
    assert abs(int(padded[20, 20, 0]) - 200) < 10 and padded[20, 20, 1] < 20
    stretched = load_image(tmp_path / "wide.png", 40, fit="squish")
    assert stretched[12:28, 20, 1].max() < 20  # the bar now fills the middle band: squashed shape
    cropped = load_image(tmp_path / "wide.png", 40, fit="crop")  # the centre 20x20, scaled up: bar and border
    assert cropped[:8, 20].min() > 240 and cropped[20, :, 1].max() < 20  # bar runs across, border above it


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_names_the_file(dataroot, tmp_path, damage):
    ids = list(read_train(dataroot)["object_id"])
    bad = dataroot / "photos" / f"{ids[3]}.jpg"
    data = bad.read_bytes()
    bad.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(LayoutError, match=f"{ids[3]}.jpg: unreadable image"):
        build_image_cache(dataroot, ids, 16, tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache").iterdir()] if (tmp_path / "cache").exists() else []
    assert [name for name in left if not name.endswith(".lock")] == []  # nothing half-written


def test_missing_photo_names_the_file(dataroot, tmp_path):
    with pytest.raises(LayoutError, match="nope.jpg: photo not found"):
        build_image_cache(dataroot, ["nope"], 16, tmp_path / "cache")


def test_dataset_returns_chw_uint8_and_targets(dataroot, tmp_path):
    ids = list(read_train(dataroot)["object_id"])
    cache = build_image_cache(dataroot, ids, 16, tmp_path / "cache")
    targets = np.arange(len(ids), dtype=np.float32)[:, None]
    ds = ImageDataset(cache, ids[::-1], targets[::-1])
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    assert torch.equal(image, torch.from_numpy(np.array(cache.array[cache.index[ids[-1]]])).permute(2, 0, 1))
    assert target.tolist() == [len(ids) - 1]
    assert ImageDataset(cache, ids, None)[0][1].item() == -1
    batch = torch.stack([ds[i][0] for i in range(4)])
    x = normalize(batch)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x, batch.float() / 127.5 - 1, atol=1e-6)
    pixels = np.asarray(cache.array, dtype=np.float64).reshape(-1, 3) / 255.0  # per-channel statistics
    mean, std = tuple(pixels.mean(0)), tuple(pixels.std(0))
    z = normalize(torch.from_numpy(np.ascontiguousarray(cache.array.transpose(0, 3, 1, 2))), mean, std)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    with pytest.raises(KeyError, match="not in image cache"):
        ImageDataset(cache, ["unknown"], None)


@pytest.mark.parametrize("fit", ["pad", "squish", "crop"])
def test_rectangular_sizes_are_height_by_width_in_every_fit(tmp_path, fit):
    pixels = np.full((20, 20, 3), 255, np.uint8)  # a square white photo with a red dot in the middle
    pixels[8:12, 8:12] = (200, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "square.png")
    out = load_image(tmp_path / "square.png", (16, 32), fit=fit)
    assert out.shape == (16, 32, 3)
    red = np.argwhere(out[..., 1] < 100)  # where the dot landed
    width = red[:, 1].max() - red[:, 1].min() + 1
    height = red[:, 0].max() - red[:, 0].min() + 1
    # pad letterboxes (dot stays round), squish stretches it 2:1, crop cuts the top and bottom (dot grows, round)
    assert {"pad": width <= height + 1, "squish": width >= 1.5 * height, "crop": width <= height + 1}[fit]
    assert {"pad": height <= 4, "squish": height <= 4, "crop": height >= 5}[fit]


def _sixteen_bit_and_transparent(folder):
    """A 0..65535 greyscale gradient saved as a 16-bit PNG, and an RGBA PNG whose top half is transparent
    black (its hidden colour) over an opaque red bottom half; both under `.jpg` names, as an adapter copies
    them (PIL decodes by content)."""
    folder.mkdir(parents=True, exist_ok=True)
    gradient = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(gradient).save(folder / "deep.png", format="PNG")
    (folder / "deep.png").rename(folder / "deep.jpg")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[16:] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(folder / "clear.png", format="PNG")
    (folder / "clear.png").rename(folder / "clear.jpg")
    assert Image.open(folder / "deep.jpg").mode.startswith("I")
    return gradient


def test_16_bit_is_scaled_and_alpha_composited_on_white_in_the_cache_views_and_pixel_features(tmp_path):
    from fold0123.data.images import to_rgb
    from fold0123.data.muge import open_image
    from fold0123.data.pixel_stats import pixel_features, read_photo
    from fold0123.data.views import all_views

    gradient = _sixteen_bit_and_transparent(tmp_path / "photos")
    cache = build_image_cache(tmp_path, ["deep", "clear"], 32, tmp_path / "cache", fit="squish", workers=1)
    deep, clear = np.asarray(cache.array[0]), np.asarray(cache.array[1])
    assert (deep[..., 0] == (gradient >> 8)).all() and len(np.unique(deep)) > 200  # was 2 values, 98 % white
    assert (clear[:16] == 255).all() and (clear[16:] == (255, 0, 0)).all()  # hidden black shown on white
    views = all_views(torch.from_numpy(np.stack([deep, clear])).permute(0, 3, 1, 2))
    assert views.shape == (16, 3, 32, 32) and (views[8:] == 255).sum() == (views[8] == 255).sum() * 8
    assert views[:8].float().mean(dim=(1, 2, 3)).allclose(torch.tensor(deep, dtype=torch.float).mean())
    # the pixel features and the MUGE reader read the same pixels by the same rule
    assert (read_photo(tmp_path / "photos" / "clear.jpg")[0] == clear).all()
    assert (read_photo(tmp_path / "photos" / "deep.jpg")[0] == deep).all()
    assert (np.asarray(open_image((tmp_path / "photos" / "clear.jpg").read_bytes(), "x")) == clear).all()
    features = pixel_features(tmp_path, ["deep", "clear"], workers=1).frame
    assert features.loc["deep"].nunique() > 3 and features.loc["clear"].ne(features.loc["deep"]).any()
    grey = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # the background is a parameter (white by default)
    assert np.asarray(to_rgb(grey, background=(10, 20, 30)))[0, 0].tolist() == [10, 20, 30]
    assert np.asarray(load_image(tmp_path / "photos" / "clear.jpg", 32, "squish", background=(0, 0, 255)))[0, 0] \
        .tolist() == [0, 0, 255]
    blue = build_image_cache(tmp_path, ["deep", "clear"], 32, tmp_path / "cache", fit="squish", workers=1,
                             background=(0, 0, 255))
    assert blue.path != cache.path and blue.array[1, 0, 0].tolist() == [0, 0, 255] and (blue.array[0] == deep).all()
