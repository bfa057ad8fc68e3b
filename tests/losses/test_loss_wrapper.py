"""The generic Keras form of every loss (tfrobseg.losses.wrapper): options stored once, generic config."""

import inspect

import keras
import numpy as np
import pytest
from loss_cases import RNG, inputs_for, np_logit, rand_case

from tfrobseg import losses as L
from tfrobseg import study
from tfrobseg.losses.wrapper import OPTION_RULES, SegmentationLoss

#: Non-default values for the options whose default gives no generic rule (None, or a bool-or-None).
NON_DEFAULT = {"teacher_from_logits": False, "alpha": 0.35, "kernel_size": 5}


def function_options(cls):
    """The keyword-only parameters of the loss function behind ``cls``, with their defaults."""
    params = inspect.signature(cls.fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def non_default_options(cls):
    """A valid value other than the default for every option of ``cls``'s function."""
    options = {}
    for name, default in function_options(cls).items():
        if name in NON_DEFAULT and NON_DEFAULT[name] != default:
            options[name] = NON_DEFAULT[name]
        elif isinstance(default, bool):
            options[name] = not default
        else:  # floats: halving and shifting stays inside every rule's interval
            options[name] = default / 2 + 0.07
    return options


def case_for(name, options):
    """(y_true, y_pred) for loss ``name`` under ``options``: one-hot classes with ``softmax``, logits with ``from_logits``."""
    if options.get("softmax"):
        g = np.eye(3, dtype=np.float32)[RNG.integers(0, 3, (3, 10, 10))]
        z = RNG.normal(size=g.shape).astype(np.float32)
        return g, z if options["from_logits"] else np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    g, p = rand_case()
    return inputs_for(name, g, np_logit(p) if options.get("from_logits") else p)


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_generic_config_round_trip_with_every_option_changed(name):
    cls = L._REGISTRY[name]
    options = non_default_options(cls)
    assert all(options[k] != v for k, v in function_options(cls).items())  # the premise: nothing left at default
    loss = L.get_loss(name, reduction="sum", **options)
    config = loss.get_config()
    assert config == {"name": name, "reduction": "sum", **options, **(
        {"initial_tversky_weight": 0.5} if name == "adaptive_tversky_ce" else {})}
    back = cls.from_config(config)
    assert back.get_config() == config
    blob = keras.saving.serialize_keras_object(loss)
    assert keras.saving.deserialize_keras_object(blob).get_config() == config
    y, x = case_for(name, options)
    np.testing.assert_allclose(float(back(y, x)), float(loss(y, x)), rtol=1e-6)


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_config_keys_are_the_function_keyword_arguments(name):
    cls = L._REGISTRY[name]
    keys = set(L.get_loss(name).get_config()) - {"name", "reduction"}
    extra = {"initial_tversky_weight"} if name == "adaptive_tversky_ce" else set()
    assert keys == set(function_options(cls)) | extra
    assert cls.default_name == name and L.get_loss(name).name == name


def test_constructor_takes_the_function_arguments_in_order():
    params = list(inspect.signature(L.TverskyLoss).parameters)
    assert params == [*function_options(L.TverskyLoss), "reduction", "name"]
    loss = L.TverskyLoss(0.4, 0.6, 0.5)  # alpha, beta, smooth, as in tversky_loss
    assert (loss.get_config()["alpha"], loss.get_config()["beta"], loss.get_config()["smooth"]) == (0.4, 0.6, 0.5)
    # The call signature of an instance is still the Keras loss call.
    assert list(inspect.signature(loss).parameters) == ["y_true", "y_pred", "sample_weight"]


def test_none_is_accepted_only_where_the_function_admits_it():
    assert L.FocalLoss(alpha=None).get_config()["alpha"] is None  # alpha: float | None
    assert L.get_loss("soft_dice_distillation", teacher_from_logits=None).get_config()["teacher_from_logits"] is None
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        L.TverskyLoss(alpha=None)  # alpha: float
    with pytest.raises(ValueError, match="smooth must be a finite number"):
        L.DiceLoss(smooth=None)


def test_every_option_of_every_loss_has_a_rule():
    for cls in L._REGISTRY.values():
        for option in function_options(cls):
            assert option in OPTION_RULES or option.endswith("_weight"), (cls.__name__, option)


def test_an_option_without_a_rule_fails_when_the_class_is_defined():
    def mystery_loss(y_true, y_pred, *, mystery: float = 1.0):
        return y_pred

    with pytest.raises(TypeError, match="mystery.*OPTION_RULES"):
        type("MysteryLoss", (SegmentationLoss,), {}, fn=mystery_loss, name="mystery")


def test_subclasses_of_a_declared_loss_inherit_it_and_undeclared_ones_fail():
    class SharperDice(L.DiceLoss):
        pass

    loss = SharperDice(smooth=0.5)
    assert loss.get_config() == L.DiceLoss(smooth=0.5).get_config()
    assert list(inspect.signature(SharperDice).parameters) == list(inspect.signature(L.DiceLoss).parameters)
    with pytest.raises(TypeError, match="fn=<function>, name=<name>"):
        type("Undeclared", (SegmentationLoss,), {})
    with pytest.raises(TypeError, match="fn=<function>, name=<name>"):
        type("Nameless", (SegmentationLoss,), {}, fn=L.dice_loss)


def test_study_losses_are_the_study_constants():
    assert L.STUDY_LOSSES is study.LOSSES
    assert set(L.SECOND_READER_LOSSES) == {"ag_bce", "adaptive_focal"}
