"""Shared test fixtures: quiet TensorFlow, the real ProstateX sample beside the checkout."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("TFROBSEG_SAMPLE", REPO_ROOT.parent / "shared" / "data" / "prostatex-sample"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real ProstateX sample (``../shared/data/prostatex-sample``); tests skip without it."""
    if not (SAMPLE_DIR / "images").is_dir():
        pytest.skip(f"ProstateX sample not found at {SAMPLE_DIR} (set TFROBSEG_SAMPLE)")
    return SAMPLE_DIR
