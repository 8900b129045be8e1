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
