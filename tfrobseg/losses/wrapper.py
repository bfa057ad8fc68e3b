"""The serializable Keras form of a per-sample loss function (cf. Keras's ``LossFunctionWrapper``).

Each loss of :mod:`tfrobseg.losses` is a plain function ``fn(y_true, y_pred, **options) -> (B,)``
and a :class:`SegmentationLoss` subclass that names it::

    class DiceLoss(SegmentationLoss, fn=dice_loss, name="dice"):
        '''Soft Dice loss; see dice_loss.'''

The class takes the function's keyword arguments (positionally too, in the function's order, with
the function's defaults), then ``reduction`` and ``name``. It validates them by name
(:data:`OPTION_RULES`), stores them once, applies ``fn`` with them in ``call`` and round-trips them
through the generic ``get_config`` / ``from_config``, so the defaults and the config keys live in
the function's signature only. Subclasses are registered for ``.keras`` deserialisation under the
package ``tfrobseg``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfrobseg.losses._common import (
    DEFAULT_REDUCTION,
    check_bool,
    check_finite,
    check_kernel_size,
)

OptionRule = Callable[[str, Any], Any]


def _nonnegative(name: str, value: Any) -> float:
    return check_finite(name, value, low=0.0)


def _positive(name: str, value: Any) -> float:
    return check_finite(name, value, low=0.0, low_inclusive=False)


def _fraction(name: str, value: Any) -> float:
    return check_finite(name, value, low=0.0, high=1.0)


#: How each keyword argument of a loss function is validated: one rule per name across the package.
#: Names ending in ``_weight`` are term weights (see :func:`option_rule`).
OPTION_RULES: dict[str, OptionRule] = {
    "from_logits": check_bool,
    "softmax": check_bool,
    "include_background": check_bool,
    "teacher_from_logits": check_bool,
    "soften_teacher": check_bool,
    "stop_gradient_gamma": check_bool,
    "pooled": check_bool,
    "smooth": _nonnegative,
    "gamma": _nonnegative,
    "alpha": _fraction,
    "beta": _fraction,
    "min_gamma": _positive,
    "temperature": _positive,
    "kernel_size": check_kernel_size,
}


def option_rule(name: str) -> OptionRule:
    """The validation rule of the loss option ``name``; term weights (``*_weight``) must be finite and >= 0."""
    if name in OPTION_RULES:
        return OPTION_RULES[name]
    if name.endswith("_weight"):
        return _nonnegative
    raise TypeError(f"loss option {name!r} has no validation rule; add one to OPTION_RULES")


def check_options(options: Mapping[str, Any], optional: frozenset[str]) -> dict[str, Any]:
    """Validate loss options by name; ``optional`` names also accept ``None``.

    Beyond each option's own rule: the term weights of a compound loss may not all be 0, and the
    Tversky α and β may not both be 0 (the index would be constant).
    """
    checked = {
        name: None if value is None and name in optional else option_rule(name)(name, value)
        for name, value in options.items()
    }
    weights = {name: value for name, value in checked.items() if name.endswith("_weight")}
    if weights and not any(weights.values()):
        raise ValueError(f"at least one of {', '.join(weights)} must be > 0, got {tuple(weights.values())}")
    if {"alpha", "beta"} <= checked.keys() and checked["alpha"] + checked["beta"] == 0.0:
        raise ValueError("alpha + beta must be > 0 (with both 0 the Tversky index is constant)")
    return checked


def _constructor_signature(fn: Callable, name: str) -> inspect.Signature:
    """``(self, <fn's keyword arguments>, reduction, name)``, each with its default."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    options = [p.replace(kind=kind) for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return inspect.Signature([
        inspect.Parameter("self", kind),
        *options,
        inspect.Parameter("reduction", kind, default=DEFAULT_REDUCTION),
        inspect.Parameter("name", kind, default=name),
    ])


def _optional_options(fn: Callable) -> frozenset[str]:
    """The keyword arguments whose annotation admits ``None`` (e.g. ``alpha: float | None``)."""
    return frozenset(n for n, hint in typing.get_type_hints(fn).items() if type(None) in typing.get_args(hint))


class SegmentationLoss(keras.losses.Loss):
    """A per-sample loss function and its validated keyword arguments, as a Keras loss.

    The reduction applies to the per-sample values (default: their mean over the batch). The dtype
    is pinned to float32 so that a mixed_float16 global policy never lowers the loss precision.
    See the module docstring for how a subclass is declared.
    """

    #: The per-sample function ``fn(y_true, y_pred, **options)`` (set by the class statement).
    fn: Callable[..., Any]
    #: The name a new instance gets by default, also its :func:`tfrobseg.losses.get_loss` name.
    default_name: str

    def __init_subclass__(cls, *, fn: Callable[..., Any] | None = None, name: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if fn is None and name is None and hasattr(cls, "fn"):
            return  # a subclass of a declared loss inherits its function and options (register it to save it)
        if fn is None or name is None:
            raise TypeError(f"declare a loss as class {cls.__name__}(SegmentationLoss, fn=<function>, name=<name>)")
        cls.fn = staticmethod(fn)
        cls.default_name = name
        cls._signature = _constructor_signature(fn, name)
        cls._optional = _optional_options(fn)
        for option in list(cls._signature.parameters)[1:-2]:
            option_rule(option)  # fail at import, not at first use, for an option without a rule
        if "__init__" not in cls.__dict__:
            cls.__init__ = _documented_init(cls._signature)
        keras.saving.register_keras_serializable(package="tfrobseg")(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = self._signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        del options["self"]
        reduction, name = options.pop("reduction"), options.pop("name")
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self._fn_kwargs = check_options(options, self._optional)

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._fn_kwargs}


def _documented_init(signature: inspect.Signature) -> Callable[..., None]:
    """The base ``__init__`` under the subclass's own signature, so that ``help()`` lists its options."""

    def __init__(self: SegmentationLoss, *args: Any, **kwargs: Any) -> None:
        SegmentationLoss.__init__(self, *args, **kwargs)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__
