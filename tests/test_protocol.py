"""tfrobseg.protocol helpers: split files, resampling with spacing, option parsing."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfrobseg import protocol


def test_load_split(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"train": ["A"], "test": ["B"]}))
    assert protocol.load_split(good) == {"train": ["A"], "test": ["B"], "val": []}
    with pytest.raises(FileNotFoundError):
        protocol.load_split(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["A"], "val": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="both training and test"):
        protocol.load_split(bad)
    bad.write_text(json.dumps({"train": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="train"):
        protocol.load_split(bad)


def test_resize_element_scales_spacing_and_keeps_masks_binary():
    mask = np.zeros((1, 8, 8, 1), "float32")
    mask[:, 2:6, 2:6] = 1
    el = {"image": tf.constant(mask * 3), "mask": tf.constant(mask), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
    out = protocol.resize_element(el, 4)
    assert out["image"].shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 1.0, 1.0]])
    assert set(np.unique(out["mask"].numpy())) == {0.0, 1.0}
    assert out["mask"].numpy().sum() == 4


def test_parser_defaults_are_the_study():
    args = protocol.build_parser("crossval").parse_args([])
    assert args.model == "all" and args.loss == "all" and args.attack == "fgsm" and args.attack_loss == "same"
    assert args.epsilons == protocol.DEFAULT_EPSILONS and args.batch_size == 4
    assert args.xla is None and args.precision is None  # resolved at run time (GPU / preset)
    with pytest.raises(SystemExit):
        protocol.build_parser("crossval").parse_args(["--epsilons", "-0.1"])
    assert protocol.build_parser("holdout").parse_args(["--split", "x.json"]).split == "x.json"
