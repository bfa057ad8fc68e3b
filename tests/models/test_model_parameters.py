"""Parameter structure: U-Net counted by hand, and each model = U-Net + its own component, layer by layer.

This is the study's fairness rule (fixed depth, filters per level and activation; Apostolidis et al.,
Sec. II-H) checked on the built models: the shared skeleton of :mod:`tfrobseg.models.blocks` must leave
only each model's own component different.
"""

from __future__ import annotations

import itertools
import re

import keras
import pytest
from model_helpers import FILTERS, bn, unet_params

from tfrobseg.models import STUDY_MODELS, build_model


def layer_params(model: keras.Model, keep=lambda name: True) -> dict[str, int]:
    return {layer.name: layer.count_params() for layer in model.layers if keep(layer.name)}


def test_unet_parameter_count_by_hand():
    filters = (16, 32, 64, 128, 256)
    assert build_model("unet", (64, 64, 1), filters=filters).count_params() == unet_params(filters) == 1_945_233
    assert build_model("unet", (64, 64, 3), filters=FILTERS, n_classes=2).count_params() == unet_params(
        FILTERS, 3, 2
    )


@pytest.fixture(scope="module")
def study_models():
    filters = (8, 16, 32, 64)
    names = (*STUDY_MODELS, "recurrent_residual_unet")
    return filters, {name: build_model(name, (64, 64, 1), filters=filters) for name in names}


def level_block(suffix: str):
    """Layers ``{level}{suffix}`` of the level blocks (``enc{i}``, ``bottleneck``, ``dec{i}``)."""
    return lambda n: re.fullmatch(r"(enc\d+|bottleneck|dec\d+)" + suffix, n) is not None


@pytest.mark.parametrize(
    "name, own, replaced",
    [
        ("attention_unet", lambda n: n.startswith("attention"), lambda n: False),
        # He's unit moves U-Net's second activation (``{level}_2_act``) after the addition (``{level}_act``).
        ("resunet", lambda n: "_shortcut_" in n or level_block("_(add|act)")(n), level_block("_2_act")),
        ("unet_vit", lambda n: n.startswith("vit_"), lambda n: False),
    ],
)
def test_models_differ_from_unet_only_by_their_component(study_models, name, own, replaced):
    """Without its own layers a model has exactly U-Net's layers (but those it replaces), names and counts."""
    _, models = study_models
    shared = layer_params(models["unet"], lambda n: not replaced(n))
    assert layer_params(models[name], lambda n: not own(n)) == shared


def test_component_parameter_counts(study_models):
    filters, models = study_models
    unet = models["unet"].count_params()
    # Attention gate at level i (skip width C, gating width C_g): theta_x 2x2 (C -> C/2), phi_g 1x1 (C_g -> C/2)
    # and psi 1x1 (C/2 -> 1), each followed by BN, then the output transform W, 1x1 (C -> C) + BN; no conv
    # followed by BN has a bias.
    gates = sum(
        4 * c * (c // 2) + bn(c // 2) + g * (c // 2) + bn(c // 2) + (c // 2) + bn(1) + c * c + bn(c)
        for c, g in itertools.pairwise(filters)
    )
    assert models["attention_unet"].count_params() - unet == gates
    # Residual shortcut per level block: 1x1 conv (no bias) + BN, from the block's input width.
    # encoder 1->8->16->32, bottleneck 32->64, decoder on the concatenations 64->32, 32->16, 16->8
    block_inputs = [(1, 8), (8, 16), (16, 32), (32, 64), (64, 32), (32, 16), (16, 8)]
    assert models["resunet"].count_params() - unet == sum(i * f + bn(f) for i, f in block_inputs)
    # ViT (defaults: patch 1, E=128, 4 heads, 2 blocks, MLP 256) between the 64-channel bottleneck and decoder.
    e, m, c, n_tokens = 128, 256, 64, (64 // 8) ** 2
    block = 2 * 2 * e + (4 * e * e + 4 * e) + (e * m + m + m * e + e)
    vit = (c * e + e) + n_tokens * e + 2 * block + 2 * e + (e * c + c)
    assert models["unet_vit"].count_params() - unet == vit
    # Recurrent units replace each double conv by 1x1 projection (with bias) + two RCLs, each one shared
    # 3x3 conv with a BN per step (t = 2: three steps).
    skeleton = lambda n: not re.match(r"(enc\d|bottleneck|dec\d)_(\d_|proj|rcl)", n)
    assert layer_params(models["recurrent_unet"], skeleton) == layer_params(models["unet"], skeleton)
    recurrent_blocks = sum(i * f + f + 2 * (9 * f * f + 3 * bn(f)) for i, f in block_inputs)
    unet_blocks = sum(9 * i * f + bn(f) + 9 * f * f + bn(f) for i, f in block_inputs)
    assert models["recurrent_unet"].count_params() - unet == recurrent_blocks - unet_blocks
    assert models["recurrent_residual_unet"].count_params() == models["recurrent_unet"].count_params()


def test_recurrent_unet_convolutions_do_not_grow_with_t():
    # The convolution is shared across the steps; only the per-step norms (4 values per channel) add up.
    counts = {t: build_model("recurrent_unet", (32, 32, 1), filters=FILTERS, t=t).count_params() for t in (0, 2, 4)}
    per_step = sum(2 * 4 * f for f in (*FILTERS, *FILTERS[-2::-1]))  # two RCLs per level, encoder + decoder
    assert counts[2] - counts[0] == counts[4] - counts[2] == 2 * per_step
