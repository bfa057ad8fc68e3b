"""Recurrent U-Net (RU-Net) and Recurrent Residual U-Net (R2U-Net) of Alom et al. (J. Med. Imaging 2019).

Each level's two convolutions are replaced by a recurrent convolutional unit: a 1x1 projection to the
level's width followed by two recurrent convolutional layers whose convolution is shared by the
feed-forward step and the ``t`` recurrent steps (:class:`tfrobseg.models.layers.RecurrentConv2D`; Alom's
``t``, default 2, so each RCL applies its convolution three times). R2U-Net adds the projected input to the
unit's output (residual shortcut); RU-Net does not."""

from __future__ import annotations

import functools

import keras

from tfrobseg.models.blocks import recurrent_block, skeleton_model
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


def _recurrent_model(name: str, cfg: BuildConfig, *, t: int, residual: bool) -> keras.Model:
    """The shared skeleton with Alom's recurrent unit (``residual``: R2U-Net's shortcut) at every level."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(
            f"{name}: t (recurrent steps of each RCL after the feed-forward one) must be an int >= 0, got {t!r}"
        )
    return skeleton_model(name, cfg, functools.partial(recurrent_block, t=t, residual=residual))


@register_model("recurrent_unet", display_name="Recurrent U-Net")
def build_recurrent_unet(cfg: BuildConfig, *, t: int = 2) -> keras.Model:
    """Build an RU-Net; ``t`` = recurrent steps of each RCL (Alom's t: ``t + 1`` convs, 0 = plain conv)."""
    return _recurrent_model("recurrent_unet", cfg, t=t, residual=False)


@register_model("recurrent_residual_unet", display_name="R2U-Net")
def build_recurrent_residual_unet(cfg: BuildConfig, *, t: int = 2) -> keras.Model:
    """Build an R2U-Net (RU-Net plus the residual shortcut around each recurrent unit); ``t`` as for RU-Net."""
    return _recurrent_model("recurrent_residual_unet", cfg, t=t, residual=True)
