"""About 320 features of a photo's pixels: what a strong tabular competitor computes in 50 lines.

On small image sets a LightGBM on these is a strong baseline (0.915 RMSE on the emoji answers, as good as the CPU
demo's whole deep pipeline), so every result table should carry it, and the stack can take them as features
beside the runs'. Each photo gives one row of `FEATURES` (prefixed `px_` in the tables, so they never clash with
run features):

  size      width, height, aspect ratio, log of the pixel count (of the photo as stored, before any resizing)
  channels  per RGB channel: mean, std, 5/25/50/75/95 % quantiles
  HSV       saturation-weighted mean direction of the hue (sin, cos) and its spread; saturation and value
            mean, std and quantiles
  colour    Hasler & Süsstrunk's colourfulness and its opponent-channel parts (rg, yb means and stds)
  texture   grey-level entropy, mean gradient magnitude, edge density (share of strong gradients)
  shares    skin-tone-like pixels (Kovač's RGB rule), near-white, near-black and grey pixels, distinct colours,
            pixels that differ from the border colour (the object on its background), centre minus border
            brightness
  histograms the hue of the coloured pixels in 16 bins; the RGB colours quantised to 4 levels a channel (64 bins)
  thumbnail  the photo squished to 8x8 RGB: where the colours are

The histograms and the thumbnail (version 2) took the LightGBM on these from 0.917 to 0.878 out-of-fold RMSE on the
emoji folds (docs/data.md, Baselines); the 51 statistics alone were version 1.

Photos are decoded the way the image cache decodes them (EXIF-upright RGB, so greyscale and CMYK JPEGs work) and
shrunk to at most `MAX_SIDE` pixels a side first: the statistics barely move, and a competition's large photos
decode in milliseconds (JPEG draft mode).

The features are cached in one CSV (`cache_file`; a dataroot's beside it, `dataroot_cache`): a row is reused
while its photo's fingerprint (name, size and mtime, common.fingerprint.stat_digest) is unchanged, so a replaced
photo is recomputed and nothing else is.
`FEATURES_VERSION` is in the file name: changing the recipe starts a new cache instead of mixing two.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from fold0123.common.dataroot import baselines_dir, photo_paths
from fold0123.common.errors import LayoutError
from fold0123.common.fingerprint import stat_digest
from fold0123.common.io import write_csv
from fold0123.data.images import default_workers, to_rgb

FEATURES_VERSION = 3  # 3: 16-bit scaled, transparency on white (data.images.to_rgb)
MAX_SIDE = 256
PREFIX = "px_"
QUANTILES = (5, 25, 50, 75, 95)
EDGE_THRESHOLD = 32.0       # grey-level gradient magnitude that counts as an edge (0..255 scale)
BACKGROUND_DISTANCE = 32.0  # max abs channel difference from the border colour that still counts as background
HUE_BINS = 16
COLOURED = 40               # saturation (0..255) above which a pixel's hue counts
RGB_LEVELS = 4              # per channel, for the colour histogram
THUMBNAIL = 8               # side of the thumbnail

FEATURES: tuple[str, ...] = (
    ("width", "height", "aspect", "log_pixels")
    + tuple(f"{c}_{s}" for c in "rgb" for s in ("mean", "std", *(f"q{q:02d}" for q in QUANTILES)))
    + ("hue_sin", "hue_cos", "hue_spread", "sat_mean", "sat_std", "sat_q50", "sat_q90",
       "val_mean", "val_std", "val_q10", "val_q50")
    + ("colourfulness", "rg_mean", "rg_std", "yb_mean", "yb_std")
    + ("grey_entropy", "gradient_mean", "edge_density")
    + ("skin_share", "white_share", "black_share", "grey_share", "colour_count", "foreground_share",
       "centre_minus_border")
    + tuple(f"hue_h{i:02d}" for i in range(HUE_BINS))
    + tuple(f"rgb_{r}{g}{b}" for r in range(RGB_LEVELS) for g in range(RGB_LEVELS) for b in range(RGB_LEVELS))
    + tuple(f"thumb_{y}{x}_{c}" for y in range(THUMBNAIL) for x in range(THUMBNAIL) for c in "rgb")
)


def columns() -> list[str]:
    """The feature columns of the tables, `px_{name}`."""
    return [PREFIX + name for name in FEATURES]


def cache_file(folder: str | Path) -> Path:
    """The cache of a folder: `pixel_stats_v{FEATURES_VERSION}.csv` (object_id, photo fingerprint, features)."""
    return Path(folder) / f"pixel_stats_v{FEATURES_VERSION}.csv"


def dataroot_cache(dataroot: str | Path) -> Path:
    """The one cache of a dataroot's photos, beside it in `{dataroot}_baselines/`: the baselines, the stack and the
    ensemble read the same rows whatever folder their runs and reports live in (the features depend on the photos
    only, and a row is keyed by its photo's fingerprint)."""
    return cache_file(baselines_dir(dataroot))


def read_photo(path: str | Path) -> tuple[np.ndarray, int, int]:
    """The photo as uint8 RGB `[h, w, 3]` with at most MAX_SIDE pixels a side, and its stored width and height.
    LayoutError naming the file when it is missing or does not decode."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: photo not found")
    try:
        with Image.open(path) as img:
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale, much faster on big photos
            img = ImageOps.exif_transpose(img)
            width, height = img.size
            img = to_rgb(img)
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise LayoutError(f"{path}: unreadable image ({' '.join(str(err).split()) or type(err).__name__})") from None
    return pixels, width, height


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def pixel_statistics(pixels: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
    """FEATURES of one uint8 RGB image `[h, w, 3]`, float64 in FEATURES order. `width`, `height`: the photo's
    stored size when `pixels` were shrunk (default: their own)."""
    h, w = pixels.shape[:2]
    width, height = width or w, height or h
    rgb = pixels.reshape(-1, 3).astype(np.float64)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    out: list[float] = [width, height, width / height, float(np.log(width * height))]
    quantiles = np.percentile(rgb, QUANTILES, axis=0)  # [len(QUANTILES), 3]
    for c in range(3):
        out += [rgb[:, c].mean(), rgb[:, c].std(), *quantiles[:, c]]

    hsv = np.asarray(Image.fromarray(pixels, "RGB").convert("HSV"), dtype=np.float64).reshape(-1, 3)
    hue, sat, val = hsv[:, 0] * (2 * np.pi / 256), hsv[:, 1] / 255, hsv[:, 2] / 255
    weight = sat / sat.sum() if sat.sum() > 0 else np.full(len(sat), 1 / len(sat))
    hue_sin, hue_cos = float((weight * np.sin(hue)).sum()), float((weight * np.cos(hue)).sum())
    out += [hue_sin, hue_cos, 1 - np.hypot(hue_sin, hue_cos), sat.mean(), sat.std(), *np.percentile(sat, (50, 90)),
            val.mean(), val.std(), *np.percentile(val, (10, 50))]

    rg, yb = r - g, 0.5 * (r + g) - b  # Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images"
    out += [np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()), rg.mean(), rg.std(), yb.mean(),
            yb.std()]

    grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    counts = np.bincount(np.minimum(grey, 255).astype(np.int64).ravel() // 4, minlength=64) / grey.size
    entropy = float(-(counts[counts > 0] * np.log2(counts[counts > 0])).sum())
    gx, gy = np.diff(grey, axis=1)[:-1, :], np.diff(grey, axis=0)[:, :-1]
    gradient = np.hypot(gx, gy)
    out += [entropy, float(gradient.mean()) if gradient.size else 0.0, _share(gradient > EDGE_THRESHOLD)]

    # Kovač, Peer & Solina (2003): skin under uniform daylight
    skin = ((r > 95) & (g > 40) & (b > 20) & (rgb.max(1) - rgb.min(1) > 15) & (np.abs(r - g) > 15) & (r > g)
            & (r > b))
    quantised = (pixels.reshape(-1, 3) >> 4).astype(np.int64) @ np.array([256, 16, 1])
    border = _border(pixels).astype(np.float64)
    background = np.median(border, axis=0)
    foreground = np.abs(rgb - background).max(axis=1) > BACKGROUND_DISTANCE
    centre = grey[h // 4: h - h // 4, w // 4: w - w // 4]
    out += [_share(skin), _share(rgb.min(1) > 240), _share(rgb.max(1) < 15), _share(sat < 0.1),
            len(np.unique(quantised)) / 4096, _share(foreground),
            (float(centre.mean()) if centre.size else float(grey.mean())) - float(border.mean())]

    coloured = hsv[:, 1] > COLOURED
    out += list(np.bincount((hsv[coloured, 0] * HUE_BINS / 256).astype(np.int64), minlength=HUE_BINS)
                / max(1, int(coloured.sum())))
    levels = (pixels.reshape(-1, 3).astype(np.int64) * RGB_LEVELS) // 256
    out += list(np.bincount(levels @ np.array([RGB_LEVELS ** 2, RGB_LEVELS, 1]), minlength=RGB_LEVELS ** 3)
                / len(levels))
    thumbnail = Image.fromarray(pixels, "RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    out += list(np.asarray(thumbnail, dtype=np.float64).ravel())
    return np.asarray(out, dtype=np.float64)


def photo_statistics(path: str | Path) -> np.ndarray:
    """FEATURES of the photo at `path`."""
    pixels, width, height = read_photo(path)
    return pixel_statistics(pixels, width, height)


def _chunk(paths: list[str]) -> np.ndarray:
    return np.stack([photo_statistics(p) for p in paths]) if paths else np.zeros((0, len(FEATURES)))


def _compute(paths: list[str], workers: int, chunk: int = 128) -> np.ndarray:
    jobs = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    if workers > 1 and len(jobs) > 1:
        # fork: the children only run PIL/numpy (as data.images does for the image cache)
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
            blocks = list(pool.map(_chunk, jobs))
    else:
        blocks = [_chunk(job) for job in jobs]
    return np.concatenate(blocks) if blocks else np.zeros((0, len(FEATURES)))


def _read_cache(path: Path | None) -> pd.DataFrame:
    """The cached rows by object_id, or an empty table when there is no usable cache (it is then rebuilt)."""
    empty = pd.DataFrame(columns=["photo", *columns()], index=pd.Index([], name="object_id"))
    if path is None or not path.is_file():
        return empty
    try:
        frame = pd.read_csv(path, dtype={"object_id": str, "photo": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return empty
    if list(frame.columns) != ["object_id", "photo", *columns()]:
        return empty
    return frame.drop_duplicates("object_id", keep="last").set_index("object_id")


@dataclass
class PixelFeatures:
    """`frame`: one row per requested object_id (in that order), columns `columns()`; how many rows were computed
    now and how many came from the cache at `cache` (None: no cache)."""
    frame: pd.DataFrame
    computed: int
    cached: int
    cache: Path | None


def pixel_features(dataroot: str | Path, object_ids: Sequence[str], cache: str | Path | None = None,
                   workers: int | None = None) -> PixelFeatures:
    """The pixel statistics of `photos/{id}.jpg` for every id, computing only photos the cache lacks or whose
    fingerprint changed, then writing the cache back (atomically) with the new rows added."""
    ids = [str(i) for i in object_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("pixel_features: duplicate object ids")
    cache = Path(cache) if cache is not None else None
    stored = _read_cache(cache)
    paths = photo_paths(dataroot, ids)
    keys = [stat_digest([p]) for p in paths]
    fresh = [i in stored.index and stored.at[i, "photo"] == key for i, key in zip(ids, keys)]
    todo = [n for n, ok in enumerate(fresh) if not ok]
    values = np.zeros((len(ids), len(FEATURES)))
    if len(todo) < len(ids):
        hit = [i for i, ok in zip(ids, fresh) if ok]
        values[np.flatnonzero(fresh)] = stored.loc[hit, columns()].to_numpy(np.float64)
    if todo:
        values[todo] = _compute([str(paths[n]) for n in todo], default_workers() if workers is None else workers)
    frame = pd.DataFrame(values, columns=columns(), index=pd.Index(ids, name="object_id"))
    if cache is not None and todo:
        rows = pd.concat([pd.Series(keys, index=frame.index, name="photo"), frame], axis=1)
        kept = stored.drop(index=[i for i in ids if i in stored.index])
        write_csv(cache, pd.concat([kept, rows]).copy().rename_axis("object_id").reset_index())  # copy: one block
    return PixelFeatures(frame, computed=len(todo), cached=len(ids) - len(todo), cache=cache)
