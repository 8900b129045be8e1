"""launcher.monitor: the loss curve from loss.log with the newest held-out metric, drawn with plotext."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from fold0123.launcher.monitor import held_out_metrics, read_loss_log, render
from tests.conftest import ROOT


def write_run(run: Path, partial_tail: str = "2 41 0.") -> Path:
    """40 logged steps over 2 epochs, a half-written 41st line, and two evaluated epochs."""
    (run / "eval").mkdir(parents=True)
    lines = ["epoch step loss lr images_per_s"]
    lines += [f"{1 + (i - 1) // 20} {i} {2.0 / i ** 0.5:.6f} 0.001 123.4" for i in range(1, 41)]
    (run / "loss.log").write_text("\n".join(lines) + "\n" + partial_tail)
    for epoch, mean, identity in ((1, 0.91, 0.95), (2, 0.71, 0.75)):
        (run / "eval" / f"epoch{epoch}_metrics.json").write_text(json.dumps(
            {"epoch": epoch, "task": "target", "split": "3fold0", "n": 16, "primary": "rmse",
             "lower_is_better": True, "views": {"mean": {"rmse": mean}, "identity": {"rmse": identity}}}))
    return run


def test_reads_whole_lines_only_and_the_newest_metric(tmp_path: Path):
    run = write_run(tmp_path / "exp_3fold0")
    points = read_loss_log(run / "loss.log")
    assert len(points) == 40 and points[-1].step == 40 and points[-1].epoch == 2  # the partial line is skipped
    assert abs(points[0].loss - 2.0) < 1e-9
    assert read_loss_log(tmp_path / "missing.log") == []
    metrics = held_out_metrics(run)
    assert [(m.epoch, m.value) for m in metrics] == [(1, 0.91), (2, 0.71)]
    (run / "eval" / "epoch3_metrics.json.tmp.123").write_text("{")  # an evaluator mid-write: ignored
    (run / "eval" / "epoch10_metrics.json").write_text(json.dumps(
        {"epoch": 10, "task": "target", "split": "3fold0", "primary": "rmse", "lower_is_better": True, "n": 16,
         "views": {"mean": {"rmse": 0.5}}}))
    assert [m.epoch for m in held_out_metrics(run)] == [1, 2, 10]  # numeric, not lexical, order


def test_once_prints_the_curve_with_the_held_out_metric(tmp_path: Path):
    run = write_run(tmp_path / "exp_3fold0")
    out = subprocess.run([sys.executable, "-m", "fold0123.launcher.monitor", str(run), "--once", "--width", "70",
                          "--height", "18"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "exp_3fold0  [running]  epoch 2  loss 0.3162" in text
    assert "held-out rmse = 0.7100 (epoch 2" in text and "identity view 0.7500" in text and "best 0.7100" in text
    assert "├0.910" in text and "├0.710" in text  # the per-epoch metric on the right axis
    assert "2.00┤" in text and "40.0" in text     # loss from 2.0, steps to 40
    assert "\x1b[" not in text                      # --once is plain text
    assert max(len(line) for line in text.splitlines()) <= 110


def test_frame_before_the_log_exists_and_for_split_all(tmp_path: Path):
    run = tmp_path / "exp_all"
    frame = render(run)
    assert "waiting for" in frame and "loss.log" in frame and "not evaluated yet" in frame
    write_run(run, partial_tail="")
    (run / "eval" / "epoch3_metrics.json").write_text(json.dumps(
        {"epoch": 3, "task": "target", "split": "all", "n": 0, "primary": "rmse", "lower_is_better": True,
         "views": {"mean": {}, "identity": {}}}))
    assert "epoch 3 evaluated (split without held-out rows" in render(run)


def test_live_mode_draws_a_final_frame_and_exits_on_done_or_failed(tmp_path: Path):
    run = write_run(tmp_path / "exp_3fold1")
    (run / "FAILED").write_text("RuntimeError: out of memory\n")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "fold0123.launcher.monitor", str(run), "--interval", "0.2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and time.monotonic() - start < 30
    assert "[FAILED: RuntimeError: out of memory]" in out.stdout and "held-out rmse" in out.stdout


def test_state_shows_a_failed_evaluator(tmp_path: Path):
    from fold0123.launcher.monitor import run_state

    run = write_run(tmp_path / "exp_3fold0")
    assert run_state(run) == "running"
    (run / "EVAL_FAILED").write_text("evaluate.py exited non-zero\n")
    assert run_state(run) == "FAILED: evaluate: evaluate.py exited non-zero"
