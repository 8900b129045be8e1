"""The HTML reports a person looks at (reports/html.py, ablation/table.py), checked the way a person would see them:
rendered by a real browser (Debian's headless `chromium`) to a PNG screenshot, plus the DOM after the page loaded.

What "renders" means here: the page is not blank; the tables are in the DOM with their rows; every plot is an
inline data: URI that both PIL and the browser decode (a copy of the page with a small probe script reports each
<img>'s natural size and place, since the report itself carries no script); and each plot's area of the
screenshot is a plot (many colours), not a broken-image icon. scripts/ensure_env.sh installs chromium as root;
elsewhere the browser tests skip, naming the package.
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fold0123.ablation.table import ablation_html
from fold0123.common.config import load_config
from fold0123.common.schema import StackConfig
from tests.conftest import ROOT, make_runs, make_synthetic_dataroot

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install chromium (Debian's package; "
                             "scripts/ensure_env.sh installs it when run as root)")
WINDOW = (1280, 9000)  # tall enough for a whole report: --screenshot takes the window, not the page
# run after the load event (images decoded): the page's height, each <img>'s natural size and its place
PROBE = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
         "document.body.setAttribute('data-probe', JSON.stringify({"
         "height: Math.ceil(document.body.getBoundingClientRect().bottom),"
         "images: imgs.map(i => { const r = i.getBoundingClientRect(); return {w: i.naturalWidth,"
         "h: i.naturalHeight, x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })}));"
         "});</script>")
BROKEN = '<img alt="control" src="data:image/png;base64,iVBORw0KGgoAAAA=">'  # a truncated PNG: must not decode


def results(stack: dict | None) -> dict:
    """A hand-made results.json in the ablation driver's schema, with the nulls a real one has."""
    row = dict(group="baselines", folds=[1.13, 1.14, 1.12], cv_mean=1.13, cv_std=0.008, oof=1.131, answers=1.1376,
               seconds=0.4, note="")
    return {
        "title": "Ablation (test preset)", "command": "make ablation PRESET=tiny", "preset": "tiny",
        "device": "cpu (2 cores)", "seeds": [0, 1], "dataroot": "datasets/emoji", "answers": None,
        "wall_seconds": 754.2,
        "rows": [{**row, "id": "1", "name": "constant mean"},
                 {**row, "id": "2", "name": "pixel-statistics LightGBM", "folds": [0.91, 0.93, 0.90],
                  "cv_mean": 0.9133, "cv_std": 0.012, "oof": 0.914, "answers": 0.915, "note": "51 features"},
                 {**row, "id": "4", "name": "jigsaw transfer (target)", "group": "transfer", "answers": None},
                 {**row, "id": "12", "name": "tag features", "group": "stack", "folds": [], "cv_mean": None,
                  "cv_std": None, "oof": None, "answers": None, "seconds": None, "note": "needs --test-tags"}],
        "claims": [
            {"claim": "the jigsaw pretext helps", "rows": ["4", "1"], "difference": -0.04, "spread": 0.016,
             "verdict": "confirmed", "cost_seconds": 120.0, "note": ""},
            {"claim": "freezing layer3/4 loses", "rows": ["2", "4"], "difference": 0.01, "spread": 0.02,
             "verdict": "not significant", "cost_seconds": None, "note": ""},
            {"claim": "post-processing helps", "rows": ["2", "1"], "difference": 0.02, "spread": 0.005,
             "verdict": "refuted", "cost_seconds": 1.5, "note": ""},
            {"claim": "tags help", "rows": ["12", "2"], "difference": None, "spread": None,
             "verdict": "not measured", "cost_seconds": None, "note": "no test tags"}],
        "stack": stack,
    }


def cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.S)]


def check_self_contained(path: Path) -> list[Image.Image]:
    """No script, no URL outside the file; every <img> an inline PNG that PIL decodes. Returns the images."""
    html = path.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in sources]
    for image in images:
        image.load()
        assert min(image.size) > 50 and len(image.convert("RGB").getcolors(1 << 20)) > 20
    return images


def test_ablation_html_is_self_contained_with_every_row_nulls_and_verdicts(tmp_path: Path):
    (tmp_path / "results.json").write_text(json.dumps(results(None)))
    out = ablation_html(tmp_path / "results.json", tmp_path / "ablation.html")
    assert out == tmp_path / "ablation.html" and not list(tmp_path.glob("*.tmp.*"))
    check_self_contained(out)
    html = out.read_text()
    texts = cells(html)
    for name in ("constant mean", "pixel-statistics LightGBM", "jigsaw transfer (target)", "tag features"):
        assert name in texts
    assert texts.count("–") >= 9  # the tag row's nulls, the missing answers and costs
    for verdict in ("confirmed", "refuted", "not-significant", "not-measured"):
        assert f'class="v-{verdict}"' in html


def test_stack_html_from_an_out_dir_without_infold_or_answers(tmp_path: Path):
    """What a stack with `infold: none` and no answers file leaves (written by hand here, through the same
    writers): the page says so instead of failing; the confusion matrix takes its classes from the data (0..2)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from fold0123.common.io import write_csv
    from fold0123.reports.html import confusion_figure, stack_html
    from fold0123.reports.markdown import write_report

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60).astype(float)
    pred = np.clip(y + rng.normal(0, 0.6, 60), 0, 2)
    write_csv(tmp_path / "s_oof.csv", pd.DataFrame({"object_id": [f"o{i}" for i in range(60)], "target": y,
                                                     "fold": np.arange(60) % 3, "stack": pred, "submitted": pred}))
    write_csv(tmp_path / "s_importance.csv", pd.DataFrame({"feature": ["a", "b"], "gain": [3.0, 1.0],
                                                            "split": [4, 2]}))
    write_csv(tmp_path / "s_epoch_metrics.csv", pd.DataFrame(
        {"exp": "target", "task": "target", "split": ["3fold0", "3fold1", "3fold0", "3fold1"], "epoch": [1, 1, 2, 2],
         "metric": "rmse", "value": [1.0, 1.1, 0.9, 0.95], "lower_is_better": True}))
    cv = pd.DataFrame([{"name": "stack (out-of-fold)", "metric": "rmse", "fold0": 0.5, "fold1": 0.6, "fold2": 0.55,
                        "mean": 0.55, "std": 0.04, "oof": 0.551}]).set_index("name")
    write_report(tmp_path, "s", {"cv": cv}, {"cv": 0.551, "postprocess_kept": False}, ["a note"])
    page = stack_html(tmp_path, "s")
    assert page == tmp_path / "s_report.html"
    assert len(check_self_contained(page)) == 3  # CV per epoch, importance, confusion matrix; no scatter
    html = page.read_text()
    assert "stack (out-of-fold)" in cells(html) and "a note" in html
    assert "the in-fold variant was not fitted" in html and "Score on the held-out answers" not in html
    fig = confusion_figure(y, pred + 3)  # predictions past the last class are clipped into it
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2"]
    assert fig.axes[0].images[0].get_array().sum() == 60 and fig.axes[0].images[0].get_array()[:, 2].sum() == 60
    plt.close(fig)


# ---- in a browser


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Headless chromium with a throwaway profile (parallel runs must not share one; root needs --no-sandbox)."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={cwd / 'chromium-profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                           *args], capture_output=True, text=True, timeout=180, cwd=cwd)


def render(page: Path, tmp: Path) -> tuple[np.ndarray, str, dict]:
    """(screenshot [H, W, 3], DOM after load, probe) of `page`; the probe comes from a copy of the page with the
    probe script and one broken control image, which the browser must report undecoded."""
    shot = tmp / f"{page.stem}.png"
    done = chromium(f"--screenshot={shot}", page.as_uri(), cwd=tmp)
    assert shot.is_file(), done.stderr[-2000:]
    probe = tmp / f"{page.stem}_probe.html"
    probe.write_text(page.read_text().replace("</body>", BROKEN + PROBE + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri(), cwd=tmp).stdout
    found = re.search(r"data-probe=\"([^\"]*)\"", dom)
    assert found, f"the probe did not run: {dom[:500]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    control = probe["images"].pop()
    assert control["w"] == 0, "the broken control image decoded: the probe cannot tell"
    return np.asarray(Image.open(shot).convert("RGB")), dom, probe


def check_rendered(pixels: np.ndarray, probe: dict, n_images: int) -> None:
    """Not blank; every image decoded by the browser and, in the screenshot, looking like a plot."""
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0]) and 1000 < probe["height"] <= WINDOW[1], probe["height"]
    non_white = (pixels[:probe["height"]] < 250).any(axis=2).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is not white"
    images = probe["images"]
    assert len(images) == n_images and all(i["w"] > 50 and i["h"] > 50 and i["width"] > 100 for i in images), images
    for i in images:
        crop = pixels[int(i["y"]):int(i["y"] + i["height"]), int(i["x"]):int(i["x"] + i["width"])]
        colours = len(np.unique(crop.reshape(-1, 3), axis=0))
        coloured = (crop.max(axis=2).astype(int) - crop.min(axis=2) > 60).mean()  # bars, lines, heat map
        assert colours > 100 and coloured > 0.001, (i, colours, coloured)  # a blank or broken one: 1 and 0


@pytest.fixture(scope="module")
def stack_out(tmp_path_factory):
    """A stack of synthetic runs (with the in-fold variant and answers), as `stack.py` makes it."""
    from fold0123.stacking import pipeline

    tmp = tmp_path_factory.mktemp("html")
    root = make_synthetic_dataroot(tmp / "data", n_train=150, n_test=50)
    make_runs(tmp / "runs", root, epochs=3)
    cfg = load_config(ROOT / "parameters/tiny/stack.yml", [
        f"dataroot={root}", f"checkpoints_dir={tmp / 'runs'}", f"out_dir={tmp / 'stack_out'}",
        f"answers={tmp / 'answers.csv'}"], schema=StackConfig)
    return pipeline.run_stack(cfg, stamp="html")


@pytest.mark.integration
@needs_chromium
def test_stack_html_renders_in_chromium(stack_out, tmp_path: Path):
    page = stack_out.report_html
    assert page == page.with_name(f"{stack_out.name}_report.html") and page.is_file()
    check_self_contained(page)
    pixels, dom, probe = render(page, tmp_path)
    texts = cells(dom)
    for name in ("stack (out-of-fold)", "stack, in-fold variant (original)", "  + clip", "out-of-fold stack",
                 "in-fold stack (original)", "target [target] epoch 3"):
        assert name in texts, name
    for heading in ("CV per epoch", "Feature importance", "Confusion matrix", "Out-of-fold vs in-fold stack",
                    "Score on the held-out answers", "Facts"):
        assert f"<h2>{heading}" in dom, heading
    check_rendered(pixels, probe, n_images=4)  # CV per epoch, importance, confusion matrix, OOF vs in-fold


@pytest.mark.integration
@needs_chromium
def test_ablation_html_renders_in_chromium_with_the_stack_sections(stack_out, tmp_path: Path):
    shutil.copytree(stack_out.report_html.parent, tmp_path / "stack_out")  # a relative out_dir: beside the json
    (tmp_path / "results.json").write_text(json.dumps(results({"out_dir": "stack_out", "name": stack_out.name})))
    page = ablation_html(tmp_path / "results.json", tmp_path / "ablation.html")
    check_self_contained(page)
    pixels, dom, probe = render(page, tmp_path)
    texts = cells(dom)
    for name in ("constant mean", "pixel-statistics LightGBM", "tag features", "the jigsaw pretext helps",
                 "confirmed", "not measured", "stack (out-of-fold)"):
        assert name in texts, name
    assert re.search(r'<td class="v-refuted">refuted</td>', dom)
    check_rendered(pixels, probe, n_images=5)  # the ablation's bar plot and the stack's four plots
