"""`cpu_slots`: at most N CPU trainers at once, the others waiting; a killed holder frees its slot."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fold0123.common import rundir
from fold0123.engine import cpu_slots
from fold0123.engine.cpu_slots import _take_free, cpu_slot, slot_count
from fold0123.engine.trainer import train
from tests.conftest import ROOT, make_recipe_root, tiny_config

HOLD = """
import sys, time
from pathlib import Path
from fold0123.engine.cpu_slots import cpu_slot
with cpu_slot(1, "holder", directory=Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_slot_count_reads_auto_as_the_cores_over_the_threads():
    cores = len(os.sched_getaffinity(0))
    assert slot_count("auto", 1) == cores
    assert slot_count("auto", 0) == 1  # torch's default threads take every core: one trainer at a time
    assert slot_count("auto", cores * 4) == 1
    assert slot_count(3, 1) == 3 and slot_count(0, 1) == 0


def test_a_held_slot_is_refused_and_a_killed_holder_frees_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _take_free(tmp_path, 1) is None  # its one slot is taken
        second = _take_free(tmp_path, 2)  # a second slot is free
        assert second is not None
        os.close(second)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        fd = _take_free(tmp_path, 1)  # the kernel dropped the killed holder's lock
        assert fd is not None
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def test_no_limit_takes_no_slot(tmp_path):
    with cpu_slot(0, "free", directory=tmp_path / "slots"):
        assert not (tmp_path / "slots").exists()


def test_a_cpu_trainer_waits_for_the_slot_then_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu_slots, "slots_dir", lambda: tmp_path / "slots")
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    cfg = tiny_config("target", dataroot, tmp_path / "runs", "transfer_from=null", "epochs=1", "cpu_slots=1")
    done = {}
    with cpu_slot(1, "the test", directory=tmp_path / "slots"):
        trainer = threading.Thread(target=lambda: done.setdefault("run", train(cfg, "3fold0", device="cpu",
                                                                                progress=False)))
        trainer.start()
        said, deadline = "", time.monotonic() + 120
        while "waiting for a CPU slot" not in said and time.monotonic() < deadline and trainer.is_alive():
            time.sleep(0.2)
            said += capsys.readouterr().err
        assert "waiting for a CPU slot (1 trainers at once: cpu_slots)" in said
        run = rundir.run_dir(cfg, "3fold0")
        assert not rundir.loss_log_path(run).is_file()  # it has not begun training while the test holds the slot
    trainer.join(timeout=300)
    assert rundir.done_path(done["run"]).is_file()


@pytest.mark.parametrize("setting", ["auto", 2])
def test_cpu_slots_is_not_part_of_what_a_run_computes(tmp_path, setting):
    from fold0123.common.fingerprint import run_fingerprint
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    plain = tiny_config("target", dataroot, tmp_path / "runs", "transfer_from=null")
    slotted = tiny_config("target", dataroot, tmp_path / "runs", "transfer_from=null", f"cpu_slots={setting}")
    assert slotted.cpu_slots == setting
    assert run_fingerprint(plain, "3fold0").config == run_fingerprint(slotted, "3fold0").config
