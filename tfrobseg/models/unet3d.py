"""3D U-Net (Çiçek et al., MICCAI 2016) and the dilated 3D U-Net of paper 003 (adaptive TverskyCE).

Both take a volume or a patch ``(D, H, W, C)`` and return ``(B, D, H, W, n_classes)`` float32 probabilities
(sigmoid for one class, softmax otherwise), like the 2D models.

**3D U-Net** is the study's U-Net skeleton built in 3D (:func:`tfrobseg.models.blocks.skeleton_model` with
``cfg.spatial_rank == 3``): per level two 3x3x3 conv-norm-ReLU layers, 2x2x2 max-pooling, 2x2x2 transposed
convolutions up, concatenated skips, 1x1x1 head. This is Çiçek et al.'s network (and the "UNet-3D" of paper
003, Sec. 3.1, which describes exactly these layers) with one difference: Çiçek's first convolution of each
encoder level has half the level's width; here both convolutions have the level's width, so that 3D U-Net
and the 2D U-Net differ only in the rank of their layers (the study's fairness rule of a shared skeleton,
and a like-for-like 2D-vs-3D comparison). With the default filters (16 ... 256, five levels) every spatial
size, the depth included, must be a multiple of 16; give fewer levels (e.g. ``filters=(16, 32, 64, 128)``)
for thin volumes.

**Dilated 3D U-Net** is the 3D U-Net with dilated convolutions at the bottleneck, the design paper 003 takes
from its ref. [12] (Giddwani et al., Deep Dilated V-Net: "dilated CNN integrated with UNet-3D at the
bottleneck layer", Sec. 3.1 and its Fig. 2). The paper's text gives neither the rates nor how the dilated
convolutions are combined (they are only drawn in its Fig. 2), so we chose, and the option
``dilation_rates`` changes the rates:

* **What:** after the bottleneck's double conv, a cascade of 3x3x3 conv-norm-ReLU layers at the bottleneck
  width, layer ``k`` with dilation rate ``dilation_rates[k]``, and the block's output is the sum of its input
  and every layer's output (:func:`tfrobseg.models.blocks.dilated_bottleneck`; the cascade-plus-parallel
  "center" of D-LinkNet, Zhou et al. 2018). The sum hands the decoder the receptive fields of every depth of
  the cascade at once (the "multi-rate" idea of ref. [12]); the identity keeps the plain 3D U-Net path, so
  the dilated model is the 3D U-Net plus its own component (its other layers, names and parameter counts
  are those of ``unet_3d``, which the tests check).
* **Rates (1, 2, 4):** each doubling the previous one makes the taps of the stacked kernels tile the
  receptive field without holes (no "gridding"), which rates sharing a factor, e.g. (2, 4, 8), would leave.
  The cascade widens the bottleneck's receptive field by 2 x (1 + 2 + 4) = 14 voxels per axis, against 4 for
  the double conv alone. Larger rates would reach past the bottleneck itself: a 32 x 128 x 128 patch with
  five levels leaves a 2 x 8 x 8 bottleneck, where a rate-8 tap only samples the zero padding.
* The rate applies to every axis, the depth axis included (the voxels of the bottleneck are 16 input
  voxels apart along every axis, whatever the spacing).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras

from tfrobseg.models.blocks import dilated_bottleneck, double_conv, skeleton_model
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("unet_3d", display_name="3D U-Net", spatial_rank=3)
def build_unet_3d(cfg: BuildConfig) -> keras.Model:
    """Build a 3D U-Net: the shared skeleton with the double conv, in 3D (module docstring)."""
    return skeleton_model("unet_3d", cfg, double_conv)


@register_model("dilated_unet_3d", display_name="Dilated 3D U-Net", spatial_rank=3)
def build_dilated_unet_3d(cfg: BuildConfig, *, dilation_rates: Sequence[int] = (1, 2, 4)) -> keras.Model:
    """Build a dilated 3D U-Net: the 3D U-Net plus a cascade of dilated convolutions at the bottleneck."""
    rates = tuple(dilation_rates) if isinstance(dilation_rates, Sequence) else ()
    if not rates or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ValueError(
            f"dilated_unet_3d: dilation_rates must be a non-empty sequence of positive integers, got {dilation_rates!r}"
        )
    return skeleton_model(
        "dilated_unet_3d", cfg, double_conv, bottleneck=functools.partial(dilated_bottleneck, cfg=cfg, dilation_rates=rates)
    )
