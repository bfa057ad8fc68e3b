"""tfrobseg.models.registry and defaults: names, display names, options, argument validation, registration."""

from __future__ import annotations

import csv
from importlib import resources

import keras
import pytest
from model_helpers import FILTERS

from tfrobseg import study
from tfrobseg.models import (
    MODEL_DISPLAY_NAMES,
    MODEL_NAMES,
    STUDY_MODELS,
    BuildConfig,
    build_model,
    defaults,
    model_names,
    model_options,
    model_spatial_rank,
    register_model,
    registry,
)


def test_registry_names():
    assert set(STUDY_MODELS) <= set(MODEL_NAMES)
    assert set(MODEL_DISPLAY_NAMES) == set(MODEL_NAMES)
    published = {"U-Net", "Attention U-Net", "Recurrent U-Net", "ResU-Net", "UNet-ViT"}
    assert {MODEL_DISPLAY_NAMES[n] for n in STUDY_MODELS} == published
    assert model_options("recurrent_unet") == {"t": 2}
    assert model_options("unet") == {}
    assert model_options("dilated_unet_3d") == {"dilation_rates": (1, 2, 4)}
    assert model_options("unet_efficientnet") == model_options("unet_plus_plus_efficientnet") == {
        "variant": "b0",
        "weights": None,
    }
    assert {n: MODEL_DISPLAY_NAMES[n] for n in model_names(spatial_rank=3)} == {
        "unet_3d": "3D U-Net",
        "dilated_unet_3d": "Dilated 3D U-Net",
    }
    assert MODEL_DISPLAY_NAMES["unet_efficientnet"] == "EfficientNet U-Net"
    assert MODEL_DISPLAY_NAMES["unet_plus_plus_efficientnet"] == "EfficientNet UNet++"


def test_models_by_input_rank():
    """The 3D models take volumes and are listed after every 2D model; the two lists split the registry."""
    two, three = model_names(spatial_rank=2), model_names(spatial_rank=3)
    assert three == ("unet_3d", "dilated_unet_3d")
    assert MODEL_NAMES == two + three
    assert {model_spatial_rank(n) for n in two} == {2} and {model_spatial_rank(n) for n in three} == {3}
    with pytest.raises(ValueError, match="unknown model 'vnet'"):
        model_spatial_rank("vnet")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vnet"}, "valid names: unet, attention_unet"),
        ({"name": "unet", "input_shape": (40, 40, 1), "filters": (4, 8, 16, 32, 64)}, "multiple of 2\\^\\(depth-1\\) = 16"),
        ({"name": "unet", "input_shape": (64, 64)}, "input_shape must be"),
        ({"name": "unet", "output": "softmax"}, "output must be one of"),
        ({"name": "unet", "normalization": "layer"}, "normalization must be one of"),
        ({"name": "unet", "filters": (8,)}, "at least two"),
        ({"name": "unet", "n_classes": 0}, "n_classes"),
        ({"name": "unet", "activation": "nope"}, "unknown activation"),
        ({"name": "unet", "t": 2}, "unknown option"),
        ({"name": "recurrent_unet", "t": -1}, "t \\(recurrent steps of each RCL"),
        ({"name": "unet_vit", "embed_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"name": "unet_vit", "input_shape": (None, None, 1)}, "static input size"),
        ({"name": "unet_vit", "patch_size": 3}, "not divisible by patch_size"),
        (
            {"name": "unet", "input_shape": (8, 64, 64, 1)},
            "^unet is a 2D model: input_shape must be \\(height, width, channels\\), got \\(8, 64, 64, 1\\)$",
        ),
        (
            {"name": "unet_3d", "input_shape": (64, 64, 1)},
            "^unet_3d is a 3D model: input_shape must be \\(depth, height, width, channels\\), got \\(64, 64, 1\\)$",
        ),
        ({"name": "unet_3d", "input_shape": (6, 64, 64, 1)}, "^input depth 6 must be a positive multiple"),
        ({"name": "unet_3d", "input_shape": (8, 64, 62, 1)}, "^input width 62 must be a positive multiple"),
        (
            {"name": "unet", "input_shape": (8, 8, 64, 64, 1)},
            "input_shape must be \\(height, width, channels\\) or \\(depth, height, width, channels\\)",
        ),
        ({"name": "unet_efficientnet", "input_shape": (64, 100, 1)}, "input width 100 must be a multiple of 32"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, message):
    kwargs = {"input_shape": (64, 64, 1), "filters": FILTERS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(kwargs.pop("name"), kwargs.pop("input_shape"), **kwargs)


def test_unknown_name_lists_every_valid_name():
    with pytest.raises(ValueError) as info:
        build_model("vnet")
    assert str(info.value) == f"unknown model 'vnet'; valid names: {', '.join(MODEL_NAMES)}"
    with pytest.raises(ValueError, match="valid names: unet, attention_unet, recurrent_unet"):
        model_options("vnet")


def test_study_constants_come_from_tfrobseg_study():
    assert STUDY_MODELS is study.MODELS
    assert defaults.FILTERS is study.FILTERS
    # The study's models lead the list in the order of its tables, the extra ones follow.
    assert MODEL_NAMES[: len(STUDY_MODELS)] == STUDY_MODELS
    assert MODEL_NAMES == model_names()


def test_study_display_names_equal_the_published_tables():
    """The display names of the study's five are the row names of the published model tables (I, II)."""
    text = resources.files("tfrobseg").joinpath("data_files/published_tables.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    by_table: dict[str, list[str]] = {}
    for row in rows:
        if row["group_by"] == "model":
            by_table.setdefault(row["table"], []).append(row["name"])
    assert set(by_table) == {"I", "II"}
    for names in by_table.values():
        assert names == [MODEL_DISPLAY_NAMES[n] for n in STUDY_MODELS]  # same names, same order


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as a copy, so models registered by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def tiny_builder(cfg: BuildConfig, *, width: int = 4) -> keras.Model:
    inputs = keras.Input(cfg.input_shape)
    hidden = keras.layers.Conv2D(width, 1)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(cfg.n_classes, 1)(hidden), name="tiny")


def test_duplicate_registration_is_refused(scratch_registry):
    with pytest.raises(ValueError, match="'unet' is already registered by tfrobseg.models.unet.build_unet"):
        register_model("unet", display_name="Other U-Net")(tiny_builder)
    assert registry.display_names()["unet"] == "U-Net"
    assert build_model("unet", (32, 32, 1), filters=FILTERS).name == "unet"


def test_registered_builder_gets_the_validated_config(scratch_registry):
    seen = []

    @register_model("tiny", display_name="Tiny")
    def build_tiny(cfg: BuildConfig, *, width: int = 4) -> keras.Model:
        seen.append(cfg)
        return tiny_builder(cfg, width=width)

    assert model_options("tiny") == {"width": 4}
    assert registry.model_names(spatial_rank=2)[-1] == "tiny" and registry.display_names()["tiny"] == "Tiny"
    model = build_model("tiny", [32, 32, 1], filters=[4, 8], n_classes=2, width=3)
    assert seen == [BuildConfig((32, 32, 1), (4, 8), "relu", "batch", 2, "probabilities")]
    assert model.count_params() == (1 * 3 + 3) + (3 * 2 + 2)
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['depth'\\]; model-specific options accepted: width"):
        build_model("tiny", (32, 32, 1), depth=3)
    with pytest.raises(ValueError, match="multiple of 2"):  # validated before the builder runs
        build_model("tiny", (30, 30, 1), filters=(4, 8, 16))
    assert len(seen) == 1


def test_registering_an_unknown_rank_is_refused(scratch_registry):
    with pytest.raises(ValueError, match="model 'tiny4d': spatial_rank must be 2 or 3, got 4"):
        register_model("tiny4d", display_name="Tiny 4D", spatial_rank=4)
    assert "tiny4d" not in registry.model_names()


@pytest.mark.parametrize(
    "builder",
    [
        lambda cfg, width=4: None,  # option not keyword-only
        lambda cfg, *, width: None,  # option without a default
        lambda *, width=4: None,  # no config parameter
    ],
)
def test_builder_of_another_form_is_refused(scratch_registry, builder):
    with pytest.raises(TypeError, match="builder\\(cfg, \\*, option=default, ...\\)"):
        register_model("odd", display_name="Odd")(builder)
    assert "odd" not in registry.model_names()


def test_build_config_normalises_and_freezes():
    cfg = BuildConfig([None, 64, 1], [4.0, 8], "relu", "none", 1, "logits")
    assert cfg.input_shape == (None, 64, 1) and cfg.filters == (4, 8) and cfg.depth == 2
    assert cfg.spatial_rank == 2
    volume = BuildConfig((None, 16, 32, 1), (4, 8, 16), "relu", "none", 1, "logits")
    assert volume.input_shape == (None, 16, 32, 1) and volume.spatial_rank == 3
    with pytest.raises(AttributeError):
        cfg.filters = (8, 16)
