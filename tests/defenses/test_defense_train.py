"""Training defended networks under the study's protocol: train_model(defense=...) and train_defended
(distillation's teacher, then its student), with a real tfrobseg U-Net once."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from defense_cases import batch, bn_net

from tfrobseg import models, training
from tfrobseg.defenses import DefendedModel, resolve_defense, train_defended
from tfrobseg.losses import soft_dice_distillation_loss
from tfrobseg.training import TrainConfig, train_model

CONFIG = TrainConfig(max_epochs=2, learning_rate=1e-2, xla=False, seed=1)


def _data(n=4, size=16):
    x, y = batch(n, size)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(2)


def test_a_tfrobseg_unet_trains_defended_and_round_trips(tmp_path):
    def build():
        return models.build_model("unet", (16, 16, 1), filters=(2, 4, 8))

    result = train_model(build, "bce_dice", _data(), _data(2), config=TrainConfig(max_epochs=1, xla=False, seed=2),
                         out_dir=tmp_path, progress=False, defense=resolve_defense("fast_adversarial"))
    assert isinstance(result.model, DefendedModel) and result.teacher is None
    assert (result.model.defense.name, result.model.role, result.model.seed) == ("fast_adversarial", "model", 2)
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1]
    loaded = keras.saving.load_model(result.model_path, safe_mode=True)
    x, _ = batch(2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0))
    assert loaded.defense == resolve_defense("fast_adversarial")


def test_distillation_trains_the_teacher_then_the_student_against_it(tmp_path):
    result = train_defended(bn_net, "bce", _data(), _data(2), defense=resolve_defense("distillation"), config=CONFIG,
                            out_dir=tmp_path, progress=False)
    teacher = result.teacher
    assert (teacher.model.role, result.model.role) == ("teacher", "student")
    assert result.model.teacher is teacher.model and teacher.teacher is None
    assert teacher.model_path == tmp_path / "teacher" / "best.keras" and result.model_path == tmp_path / "best.keras"
    assert (tmp_path / "teacher" / "history.csv").exists() and (tmp_path / "history.csv").exists()
    # The student's validation loss is the soft-Dice distillation loss at T against the trained teacher's logits.
    x, y = batch(2)
    logits = [keras.Model(m.input, m.get_layer("logits").output)(x) for m in (teacher.model, result.model)]
    expected = soft_dice_distillation_loss(*logits, temperature=100.0, from_logits=True).numpy().mean()
    assert result.model.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-6)
    for run in (teacher, result):
        loaded = keras.saving.load_model(run.model_path, safe_mode=True)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), run.model.predict(x, verbose=0))


def test_the_other_defenses_and_none_are_one_training_run():
    plain = train_defended(bn_net, "bce", _data(), None, defense=None, config=CONFIG, progress=False)
    assert not isinstance(plain.model, DefendedModel) and plain.teacher is None
    noisy = train_defended(bn_net, "bce", _data(), None, defense=resolve_defense("uniform_noise"), config=CONFIG,
                           progress=False)
    assert noisy.model.defense.name == "uniform_noise" and noisy.teacher is None


def test_a_reused_defended_model_draws_the_same_noise_again():
    """reuse_key: the kept model's weights, optimizer and random state are reset, so a noise defense's second
    run is the first one again, number for number; and a defended run never reuses the plain model."""
    defense = resolve_defense("gaussian_noise", {"sigma": 0.5})

    def fit(key, defended=defense):
        return train_model(bn_net, "bce", _data(), None, config=CONFIG, progress=False, reuse_key=key, defense=defended)

    training.clear_reusable_models()
    try:
        fresh, first, second = fit(None), fit("k"), fit("k")
        assert second.model is first.model
        for result in (first, second):
            pd.testing.assert_frame_equal(result.history, fresh.history)
        assert fit("k", None).model is not first.model
    finally:
        training.clear_reusable_models()


def test_roles_without_a_defense_are_refused():
    with pytest.raises(ValueError, match=r"^train_model: role='teacher' / teacher are distillation's; pass defense="):
        train_model(bn_net, "bce", _data(), None, config=CONFIG, progress=False, role="teacher")
