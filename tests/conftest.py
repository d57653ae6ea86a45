import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = ROOT / os.environ.get("SPARSELM_DATA_DIR", ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"data directory {path} not found; set SPARSELM_DATA_DIR")
    return path
