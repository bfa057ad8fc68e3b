"""Recurrent U-Net (RU-Net) and Recurrent Residual U-Net (R2U-Net) of Alom et al. (J. Med. Imaging 2019).

Each level's two convolutions are replaced by a recurrent convolutional unit: a 1x1 projection to the
level's width followed by two recurrent convolutional layers whose convolution is shared across the ``t``
unrolled steps (:class:`tfrobseg.models.layers.RecurrentConv2D`). R2U-Net adds the projected input to the
unit's output (residual shortcut); RU-Net does not.
"""

from __future__ import annotations

import functools

import keras

from tfrobseg.models.blocks import recurrent_block, skeleton_model
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


def _recurrent_model(name: str, cfg: BuildConfig, *, t: int, residual: bool) -> keras.Model:
    """The shared skeleton with Alom's recurrent unit (``residual``: R2U-Net's shortcut) at every level."""
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"{name}: t (applications of the shared recurrent conv) must be an int >= 1, got {t!r}")
    return skeleton_model(name, cfg, functools.partial(recurrent_block, t=t, residual=residual))


@register_model("recurrent_unet", display_name="Recurrent U-Net")
def build_recurrent_unet(cfg: BuildConfig, *, t: int = 2) -> keras.Model:
    """Build an RU-Net; ``t`` = applications of each shared recurrent conv (1 = plain conv)."""
    return _recurrent_model("recurrent_unet", cfg, t=t, residual=False)


@register_model("recurrent_residual_unet", display_name="R2U-Net")
def build_recurrent_residual_unet(cfg: BuildConfig, *, t: int = 2) -> keras.Model:
    """Build an R2U-Net (RU-Net plus the residual shortcut around each recurrent unit)."""
    return _recurrent_model("recurrent_residual_unet", cfg, t=t, residual=True)
