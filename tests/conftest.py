import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.fixtures import make_dataroot  # noqa: E402


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    """A fresh tiny dataroot (train.csv, test.csv, tags, 32 px photos); answers.csv lies beside it."""
    return make_dataroot(tmp_path / "data")


@pytest.fixture
def tmux_socket():
    """A private tmux server name; the server (and everything it runs) is killed afterwards."""
    name = f"fold0123test_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def pytest_terminal_summary(terminalreporter):
    """The fault-injection figures (tests/test_faults.py), one line per probe, when any probe ran."""
    import sys

    harness = sys.modules.get("tests.faults_harness")
    if harness is None or not harness.SUMMARY:
        return
    terminalreporter.section("fault injection")
    for part in harness.summary_line(harness.SUMMARY).split("; "):
        terminalreporter.write_line(part)
    if os.environ.get("FAULT_SUMMARY"):
        terminalreporter.write_line(f"figures and the kill schedule: {os.environ['FAULT_SUMMARY']}")
