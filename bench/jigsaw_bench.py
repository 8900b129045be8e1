"""Jigsaw batch generation: on the fly (data.jigsaw.jigsaw_batch) vs the original's files-and-ImageMagick way.

The original atmaCup #11 solution made each shuffled image with ImageMagick: per permutation, one `convert`
per tile row (crop three tiles, `+append`) and one more to `-append` the rows, all through files. This
benchmark makes the same shuffles of the same images (identity + 7 non-identity permutations per photo)

  1. with ImageMagick `convert` subprocesses on JPEG files (only where a real ImageMagick is installed),
  2. with the same file steps done by PIL in-process (a lower bound of 1: no process start-up), and that plus
     the measured cost of starting 4 processes (an estimate of 1 where ImageMagick is missing),
  3. with `jigsaw_batch` on a uint8 batch in memory,
  4. with a plain `torch.clone` of the same number of output bytes (the memory-speed ceiling),

checks that the file ways and the tensor way produce the same images, and prints images/s and ratios.

    .venv/bin/python -m bench.jigsaw_bench [--images 64] [--file-images 3] [--size 225] [--threads 1]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fold0123.data.jigsaw import crop_to_grid, jigsaw_batch

GRID = 3


def make_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random photos (blurred noise plus gradients), so JPEG sizes and decode costs are photo-like."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    out = np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.Resampling.BICUBIC)) for s in small])
    noise = rng.normal(0, 8, out.shape)
    return np.clip(out + noise, 0, 255).astype(np.uint8)


def real_imagemagick() -> str | None:
    """Path of a real ImageMagick `convert` (not a stand-in script), or None."""
    for name in ("magick", "convert"):
        path = shutil.which(name)
        if not path:
            continue
        try:
            version = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in version and "not installed" not in version:
            return path
    return None


def tile_boxes(size: int) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of each tile, row-major, after the centre crop jigsaw_batch does."""
    tile = size // GRID
    offset = (size - tile * GRID) // 2
    return [(offset + (t % GRID) * tile, offset + (t // GRID) * tile, tile, tile) for t in range(GRID * GRID)]


def shuffle_with_imagemagick(convert: str, src: Path, perm: np.ndarray, size: int, out: Path) -> None:
    """The original's way: one `convert` per tile row, then one to stack the rows."""
    boxes = tile_boxes(size)
    source_of = np.argsort(perm)  # source_of[p] = the tile shown at position p
    rows = []
    for r in range(GRID):
        row = out.with_name(f"{out.stem}_row{r}.png")
        crops = [f"{src}[{w}x{h}+{x}+{y}]" for x, y, w, h in (boxes[source_of[r * GRID + c]] for c in range(GRID))]
        subprocess.run([convert, *crops, "+repage", "+append", str(row)], check=True)
        rows.append(str(row))
    subprocess.run([convert, *rows, "-append", str(out)], check=True)


def shuffle_with_pil_files(src: Path, perm: np.ndarray, size: int, out: Path) -> None:
    """The same file steps in-process: read the JPEG per row, crop 3 tiles, write the row, stack the rows."""
    boxes = tile_boxes(size)
    source_of = np.argsort(perm)
    rows = []
    for r in range(GRID):
        with Image.open(src) as img:
            img.load()
            tiles = [img.crop((x, y, x + w, y + h)) for x, y, w, h in
                     (boxes[source_of[r * GRID + c]] for c in range(GRID))]
        row = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height))
        for c, tile in enumerate(tiles):
            row.paste(tile, (c * tile.width, 0))
        path = out.with_name(f"{out.stem}_row{r}.png")
        row.save(path)
        rows.append(path)
    images = [Image.open(p) for p in rows]
    full = Image.new("RGB", (images[0].width, sum(i.height for i in images)))
    for r, img in enumerate(images):
        full.paste(img, (0, r * img.height))
        img.close()
    full.save(out, quality=95)


def spawn_seconds(count: int = 20) -> float:
    """Median cost of starting one process (`true`): what every `convert` call pays before any work."""
    true = shutil.which("true") or "/bin/true"
    times = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run([true], check=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(images: int = 64, file_images: int = 3, size: int = 225, threads: int = 1, repeats: int = 5,
        perms_per_image: int = 8, device: str = "cpu") -> list[dict]:
    torch.set_num_threads(threads)
    pixels = make_images(max(images, file_images), size)
    batch = torch.from_numpy(pixels[:images]).permute(0, 3, 1, 2).contiguous().to(device)
    generator = torch.Generator().manual_seed(0)
    outputs_per_call = images * perms_per_image

    def sync():
        if batch.device.type == "cuda":
            torch.cuda.synchronize()

    def on_the_fly():
        jigsaw_batch(batch, perms_per_image, None, generator)
        sync()

    shuffled, labels = jigsaw_batch(batch, perms_per_image, None, generator)

    def memcopy():
        shuffled.clone()
        sync()

    results = [
        dict(method=f"jigsaw_batch (uint8 tensors, {device}, {threads} thread(s))",
             images_per_s=outputs_per_call / best_of(on_the_fly, repeats)),
        dict(method="torch.clone of the same output bytes",
             images_per_s=outputs_per_call / best_of(memcopy, repeats)),
    ]

    convert = real_imagemagick()
    with tempfile.TemporaryDirectory(prefix="jigsaw_bench_") as tmp:
        tmp = Path(tmp)
        sources = []
        for i in range(file_images):
            path = tmp / f"src{i}.jpg"
            Image.fromarray(pixels[i]).save(path, quality=95)
            sources.append(path)
        decoded = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sources]))
        decoded = decoded.permute(0, 3, 1, 2).contiguous()
        file_shuffled, file_labels = jigsaw_batch(decoded, perms_per_image, None, torch.Generator().manual_seed(1))
        perms = file_labels.numpy()
        n_files = len(perms)

        def files(maker):
            for j, perm in enumerate(perms):
                maker(sources[j // perms_per_image], perm, size, tmp / f"out{j}.jpg")

        def max_error() -> float:
            made = [np.asarray(Image.open(tmp / f"out{j}.jpg").convert("RGB"), dtype=np.float64)
                    for j in range(n_files)]
            made = torch.from_numpy(np.stack(made)).permute(0, 3, 1, 2)
            return float((made - file_shuffled.double()).abs().mean((1, 2, 3)).max())

        pil_seconds = best_of(lambda: files(shuffle_with_pil_files), 1)
        pil_error = max_error()
        if pil_error > 10:  # JPEG re-encoding costs ~4 grey levels; a wrong tile order costs tens
            raise AssertionError(f"the file way and jigsaw_batch disagree (mean |diff| {pil_error:.1f})")
        spawn = spawn_seconds()
        results.append(dict(method="files via PIL in-process (original's steps, no process start)",
                            images_per_s=n_files / pil_seconds, check=f"mean |diff| <= {pil_error:.2f}"))
        estimate = n_files / (pil_seconds + n_files * (GRID + 1) * spawn)
        results.append(dict(method=f"  + {GRID + 1} process starts per image ({spawn * 1e3:.1f} ms each): estimate",
                            images_per_s=estimate))
        if convert:
            magick_seconds = best_of(lambda: files(lambda *a: shuffle_with_imagemagick(convert, *a)), 1)
            results.append(dict(method="ImageMagick convert per tile row (the original)",
                                images_per_s=n_files / magick_seconds, check=f"mean |diff| <= {max_error():.2f}"))
        else:
            results.append(dict(method="ImageMagick convert per tile row (the original)", images_per_s=float("nan"),
                                check="not run: no real ImageMagick here (apt-get install imagemagick)"))
    assert crop_to_grid(batch).shape[-1] == shuffled.shape[-1]
    return results


def format_table(results: list[dict]) -> str:
    fly = results[0]["images_per_s"]
    magick = [r["images_per_s"] for r in results
              if r["method"].startswith("ImageMagick") and np.isfinite(r["images_per_s"])]
    if magick:
        original, label = magick[0], "the original (ImageMagick)"
    else:
        original = next(r["images_per_s"] for r in results if r["method"].strip().startswith("+"))
        label = "the original (estimate: its file steps + process starts; no ImageMagick here)"
    lines = [f"{'method':<68} {'images/s':>12} {'jigsaw_batch is x faster':>25}  check"]
    for r in results:
        speed = r["images_per_s"]
        ratio = fly / speed if np.isfinite(speed) else float("nan")
        lines.append(f"{r['method']:<68} {speed:>12,.1f} {ratio:>25,.2f}  {r.get('check', '')}")
    lines.append(f"jigsaw_batch vs {label}: x{fly / original:,.0f}; "
                 f"vs a memory copy of the same bytes: {fly / results[1]['images_per_s']:.2f} of memcpy speed")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="source images in the in-memory batch")
    parser.add_argument("--file-images", type=int, default=3, help="source images for the file-based ways")
    parser.add_argument("--size", type=int, default=225, help="image side in px")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the tensor ways")
    args = parser.parse_args(argv)
    results = run(args.images, args.file_images, args.size, args.threads, args.repeats, device=args.device)
    print(f"{args.images} x 8 shuffled {args.size}px images per tensor call; {args.file_images} x 8 through files")
    print(format_table(results))


if __name__ == "__main__":
    main()
