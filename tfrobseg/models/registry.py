"""The model registry: ``@register_model`` beside each builder, one :func:`build_model` for all of them.

The pattern is timm's ``_registry.py``: a builder registers itself under its name, with the name printed in
the study's tables, and callers build by name. Every builder has the form
``builder(cfg: BuildConfig, *, <its own options, each with a default>) -> keras.Model``. The arguments all
models share - the depth, filters per level and activation the study holds fixed (Apostolidis et al.,
Sec. II-H), plus the head - are named once, in :func:`build_model`, and reach the builder validated as a
:class:`~tfrobseg.models.defaults.BuildConfig`; a builder only adds its own component. Each model also
declares the rank of its input (2: slices ``(H, W, C)``, 3: volumes ``(D, H, W, C)``), so a 2D network
asked for a volume (or the reverse) is refused with one line before anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras

from tfrobseg import study
from tfrobseg.models.defaults import (
    ACTIVATION,
    FILTERS,
    INPUT_SHAPE,
    NORMALIZATION,
    SPATIAL_AXES,
    BuildConfig,
)

Builder = Callable[..., keras.Model]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder, its display name, its own options with their defaults, its input rank."""

    name: str
    display_name: str
    builder: Builder
    options: Mapping[str, object]
    spatial_rank: int


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, display_name: str, spatial_rank: int = 2) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` as the model ``name``, shown as ``display_name`` in tables.

    The builder takes the :class:`BuildConfig` positionally and its own options as keyword-only arguments
    with defaults (what :func:`model_options` reports). ``spatial_rank`` is the rank of the input the model
    takes: 2 for slices ``(H, W, C)`` (the default), 3 for volumes ``(D, H, W, C)``. Registering a name
    twice raises ``ValueError`` (the second builder would silently replace the first), as does a rank other
    than 2 or 3; a builder of another form raises ``TypeError``.
    """
    if spatial_rank not in SPATIAL_AXES:
        raise ValueError(f"model {name!r}: spatial_rank must be 2 or 3, got {spatial_rank!r}")

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            first = _REGISTRY[name].builder
            raise ValueError(f"model {name!r} is already registered by {first.__module__}.{first.__qualname__}")
        _REGISTRY[name] = ModelEntry(name, display_name, builder, _own_options(name, builder), spatial_rank)
        return builder

    return decorator


def _own_options(name: str, builder: Builder) -> dict[str, object]:
    """The builder's keyword-only options and defaults; checks the ``builder(cfg, *, option=default)`` form."""
    params = list(inspect.signature(builder).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    own = params[1:]
    if (
        not params
        or params[0].kind not in positional
        or any(p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is p.empty for p in own)
    ):
        raise TypeError(
            f"builder of model {name!r} must have the form builder(cfg, *, option=default, ...), "
            f"got {builder.__qualname__}{inspect.signature(builder)}"
        )
    return {p.name: p.default for p in own}


def _study_rank(name: str) -> int:
    return study.MODELS.index(name) if name in study.MODELS else len(study.MODELS)


def model_names(spatial_rank: int | None = None) -> tuple[str, ...]:
    """Registered names: the study's models first, in the order of its tables, then the other 2D models and
    then the 3D ones, each as registered.

    ``spatial_rank=2`` keeps the models that take slices, ``3`` those that take volumes; ``None``: all.
    """
    names = sorted(_REGISTRY, key=lambda n: (_study_rank(n), _REGISTRY[n].spatial_rank))
    return tuple(n for n in names if spatial_rank is None or _REGISTRY[n].spatial_rank == spatial_rank)


def display_names() -> dict[str, str]:
    """Registered name -> display name, in :func:`model_names` order."""
    return {name: _REGISTRY[name].display_name for name in model_names()}


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The model-specific keyword arguments of ``name`` and their defaults (e.g. ``{"t": 2}``)."""
    return dict(_entry(name).options)


def model_spatial_rank(name: str) -> int:
    """The rank of the input ``name`` takes: 2 for slices ``(H, W, C)``, 3 for volumes ``(D, H, W, C)``."""
    return _entry(name).spatial_rank


def build_model(
    name: str,
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
    **model_specific: object,
) -> keras.Model:
    """Build the segmentation model ``name`` (one of :func:`model_names`).

    Args:
        name: registry name, e.g. ``"unet"``, ``"attention_unet"``, ``"recurrent_unet"``, ``"resunet"``,
            ``"unet_vit"``, ``"recurrent_residual_unet"``, ``"unet_plus_plus"``.
        input_shape: ``(H, W, C)`` for the 2D models, ``(D, H, W, C)`` for the 3D ones
            (:func:`model_spatial_rank`); every spatial size a multiple of 2^(depth-1) (``None`` allowed
            except for ``unet_vit``, whose position embedding needs a fixed token count), and of 32 for the
            EfficientNet-encoder models (five stride-2 stages).
        filters: channels per level, encoder top to bottleneck; depth = ``len(filters)``.
        activation: Keras activation name of every conv block.
        normalization: ``"batch"``, ``"group"``, ``"instance"`` or ``"none"``.
        n_classes: 1 -> sigmoid head, > 1 -> softmax head.
        output: ``"probabilities"`` or ``"logits"`` (pre-activation).
        **model_specific: see :func:`model_options` (``t`` for the recurrent models; ``patch_size``,
            ``embed_dim``, ``num_heads``, ``num_layers``, ``mlp_dim``, ``dropout`` for ``unet_vit``;
            ``deep_supervision`` for ``unet_plus_plus``; ``dilation_rates`` for ``dilated_unet_3d``;
            ``variant`` and ``weights`` for the EfficientNet-encoder models).

    Returns:
        A functional ``keras.Model`` with float32 output ``(B, H, W, n_classes)`` (``(B, D, H, W, n_classes)``
        for the 3D models; float32 even under ``mixed_float16``), named ``name``.

    Raises:
        ValueError: naming the bad argument; an unknown ``name`` lists the valid ones.
    """
    entry = _entry(name)
    unknown = sorted(set(model_specific) - set(entry.options))
    if unknown:
        accepted = ", ".join(entry.options) or "none"
        raise ValueError(f"{name}: unknown option(s) {unknown}; model-specific options accepted: {accepted}")
    cfg = BuildConfig(input_shape, filters, activation, normalization, n_classes, output)
    if cfg.spatial_rank != entry.spatial_rank:
        axes = ", ".join((*SPATIAL_AXES[entry.spatial_rank], "channels"))
        raise ValueError(
            f"{name} is a {entry.spatial_rank}D model: input_shape must be ({axes}), got {cfg.input_shape!r}"
        )
    return entry.builder(cfg, **model_specific)
