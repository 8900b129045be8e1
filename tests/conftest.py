import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.fixtures import make_dataroot  # noqa: E402


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    """A fresh tiny dataroot (train.csv, test.csv, tags, 32 px photos); answers.csv lies beside it."""
    return make_dataroot(tmp_path / "data")
