"""Shared test fixtures: quiet TensorFlow, the real ProstateX sample beside the checkout, a tiny cohort.

In CI (``CI=true``) the real sample is required: a missing sample fails the tests that need it
instead of skipping them, so a CI run can never pass on the synthetic data alone.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SAMPLE_DIR = Path(os.environ.get("TFROBSEG_SAMPLE", SHARED / "data" / "prostatex-sample"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise fail in CI and skip elsewhere, naming what is missing."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(f"{message}: CI must run with ../shared beside the checkout", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real ProstateX sample (``../shared/data/prostatex-sample``, or ``$TFROBSEG_SAMPLE``)."""
    require(SAMPLE_DIR / "images", "ProstateX sample (set TFROBSEG_SAMPLE)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 6-patient built-in synthetic cohort (train 4 in folds [2, 1, 1], val 1, test 1), prepared once.

    ``$TFROBSEG_TEST_COHORT`` names a folder to keep it in across runs (the mutation runner does).
    """
    from tfrobseg.dataset.synthetic import prepare_builtin

    folder = os.environ.get("TFROBSEG_TEST_COHORT") or tmp_path_factory.mktemp("data") / "builtin"
    return prepare_builtin(folder, n_patients=6, seed=0)


def batch_norm_net(size: int = 32, seed: int = 0):
    """Conv → batch norm → ReLU → conv → sigmoid, with moving statistics far from any batch's own.

    A forward pass with ``training=True`` normalises with the batch's statistics instead of the
    moving ones, so its output differs clearly from inference mode: attacks must use the latter.
    """
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    norm = keras.layers.BatchNormalization()
    h = keras.layers.Activation("relu")(norm(keras.layers.Conv2D(6, 3, padding="same")(inp)))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(h)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(h))
    gamma, beta, _, _ = norm.get_weights()
    rng = np.random.default_rng(seed)
    norm.set_weights([gamma, beta, rng.normal(0.5, 0.5, 6).astype("float32"), rng.uniform(2, 4, 6).astype("float32")])
    return model
