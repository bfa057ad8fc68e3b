"""DefendedModel (tfrobseg.defenses.model): each defense's train_step against a NumPy computation of its loss and
of one SGD update on p = σ(w·x + b); inference-mode batch norm for the attack; β = 1 as ordinary training;
the clean validation objective; .keras round trips of every defense and role; XLA and mixed precision."""

import keras
import numpy as np
import pytest
from defense_cases import (
    B,
    W,
    batch,
    bce,
    bce_weight_gradient,
    bn_net,
    kl,
    pixel_net,
    pixel_weights,
    sigmoid,
)

from tfrobseg.attacks import fgsm
from tfrobseg.attacks.precision import float32_copy
from tfrobseg.defenses import DEFENSE_NAMES, DefendedModel, resolve_defense
from tfrobseg.training import set_output_prior

LR = 0.5
EPS = 0.3
SEED = 5  # the defended models' seed (not the default 0: the round trip must keep it)


def _stepped(defense, network=None, role="model", teacher=None, x=None, y=None, optimizer=None, jit=False):
    """The wrapped network after one train step on (x, y), and the loss the step reported."""
    model = DefendedModel.wrap(network or pixel_net(), defense, role=role, teacher=teacher, seed=SEED)
    model.compile(optimizer or keras.optimizers.SGD(LR), loss="bce", jit_compile=jit)
    logs = model.train_on_batch(x, y, return_dict=True)
    return model, logs["loss"]


def _uniform(shape, radius):
    return keras.ops.convert_to_numpy(keras.random.uniform(shape, -radius, radius, dtype="float32",
                                                           seed=keras.random.SeedGenerator(SEED)))


def _normal(shape):
    return keras.ops.convert_to_numpy(keras.random.normal(shape, dtype="float32",
                                                          seed=keras.random.SeedGenerator(SEED)))


def _bce_sign(x, y):
    return np.sign((sigmoid(W * x + B) - y) * W)


def _ball(x, x_k):
    return x + np.clip(x_k - x, -EPS, EPS)


def _examples(x, y):
    """The NumPy examples of the adversarial defenses at the initial weights (the model's seed: its first draw)."""
    start = x + _uniform(x.shape, EPS)
    pgd = start
    for _ in range(2):
        pgd = _ball(x, pgd + 2.5 * EPS / 2 * _bce_sign(pgd, y))
    return {"adversarial": x + EPS * _bce_sign(x, y),
            "fast_adversarial": _ball(x, start + 1.25 * EPS * _bce_sign(start, y)),
            "pgd_adversarial": pgd}


#: The options of each defense in the tests against NumPy (small step counts, visible noise, T = 5).
OPTIONS = {"adversarial": {"epsilon": EPS, "beta": 0.25}, "fast_adversarial": {"epsilon": EPS, "beta": 0.25},
           "pgd_adversarial": {"epsilon": EPS, "beta": 0.25, "steps": 2}, "trades": {"epsilon": EPS, "steps": 2},
           "distillation": {"temperature": 5}, "uniform_noise": {"radius": 0.2}, "gaussian_noise": {"sigma": 0.2}}
ROLES = [(name, "model") for name in DEFENSE_NAMES if name != "distillation"] + [("distillation", "teacher"),
                                                                                 ("distillation", "student")]


@pytest.fixture(scope="module")
def stepped():
    """Every defense and role on p = σ(w·x + b) (the teacher's w = 0.9, b = 0.3) after one SGD step on the batch:
    ``{(name, role): (model, reported loss)}``, and ``"batch"`` (soft targets)."""
    x, y = batch(soft=True)
    out = {"batch": (x, y)}
    for name, role in ROLES:
        network = pixel_net(0.9, 0.3, name="teacher") if role == "teacher" else pixel_net()
        teacher = out["distillation", "teacher"][0] if role == "student" else None
        out[name, role] = _stepped(resolve_defense(name, OPTIONS[name]), network, role=role, teacher=teacher, x=x, y=y)
    return out


@pytest.mark.parametrize("name", ["adversarial", "fast_adversarial", "pgd_adversarial"])
def test_adversarial_training_steps_on_the_beta_mixture(stepped, name):
    x, y = stepped["batch"]
    model, loss = stepped[name, "model"]
    x_adv = _examples(x, y)[name]
    assert loss == pytest.approx(0.25 * bce(y, sigmoid(W * x + B)) + 0.75 * bce(y, sigmoid(W * x_adv + B)), rel=1e-5)
    grad = 0.25 * bce_weight_gradient(x, y, W, B) + 0.75 * bce_weight_gradient(x_adv, y, W, B)
    np.testing.assert_allclose(pixel_weights(model), np.array([W, B]) - LR * grad, rtol=1e-5)


def test_trades_steps_on_the_clean_loss_plus_beta_times_the_pixel_kl(stepped):
    x, y = stepped["batch"]
    model, loss = stepped["trades", "model"]
    p = sigmoid(W * x + B)
    x_adv = x + 0.001 * _normal(x.shape)
    for _ in range(2):  # ∂KL(p‖q)/∂x' = (q − p)·w
        x_adv = _ball(x, x_adv + 2.5 * EPS / 2 * np.sign((sigmoid(W * x_adv + B) - p) * W))
    z, z_adv = W * x + B, W * x_adv + B
    q = sigmoid(z_adv)
    assert loss == pytest.approx(bce(y, p) + 6.0 * kl(p, q).mean(), rel=1e-5)
    # ∂KL/∂z = p(1 − p)(z − z'), ∂KL/∂z' = q − p: both predictions carry gradients.
    dz, dz_adv = p * (1 - p) * (z - z_adv) / x.size, (q - p) / x.size
    grad_kl = np.array([np.sum(dz * x + dz_adv * x_adv), np.sum(dz + dz_adv)])
    np.testing.assert_allclose(pixel_weights(model), np.array([W, B]) - LR * (bce_weight_gradient(x, y, W, B) +
                                                                              6.0 * grad_kl), rtol=1e-5)


@pytest.mark.parametrize("name", ["uniform_noise", "gaussian_noise"])
def test_noise_defenses_step_on_the_noisy_then_on_the_clean_batch(stepped, name):
    x, y = stepped["batch"]
    model, loss = stepped[name, "model"]
    noisy = x + (_uniform(x.shape, 0.2) if name == "uniform_noise" else 0.2 * _normal(x.shape))
    w1, b1 = np.array([W, B]) - LR * bce_weight_gradient(noisy, y, W, B)
    np.testing.assert_allclose(pixel_weights(model), np.array([w1, b1]) - LR * bce_weight_gradient(x, y, w1, b1),
                               rtol=1e-5)
    assert loss == pytest.approx((bce(y, sigmoid(W * noisy + B)) + bce(y, sigmoid(w1 * x + b1))) / 2, rel=1e-5)


def test_the_teacher_trains_on_its_outputs_at_temperature(stepped):
    x, y = stepped["batch"]
    teacher, loss = stepped["distillation", "teacher"]
    assert loss == pytest.approx(bce(y, sigmoid((0.9 * x + 0.3) / 5)), rel=1e-5)
    expected = np.array([0.9, 0.3]) - LR * bce_weight_gradient(x, y, 0.9, 0.3, temperature=5)
    np.testing.assert_allclose(pixel_weights(teacher), expected, rtol=1e-5)
    # Validation: the same loss at T, of the trained weights; the deployed output stays at T = 1.
    w, b = expected
    assert teacher.evaluate(x, y, verbose=0) == pytest.approx(bce(y, sigmoid((w * x + b) / 5)), rel=1e-5)
    np.testing.assert_allclose(teacher.predict(x, verbose=0), sigmoid(w * x + b), rtol=1e-5)


def _soft_dice_loss(teacher_wb, w, b, x):
    """1 − soft Dice (s = 1, counts pooled over the batch) of σ(z_s / 5) against σ(z_t / 5), and ∂/∂(w, b)."""
    a = sigmoid((teacher_wb[0] * x + teacher_wb[1]) / 5)
    s = sigmoid((w * x + b) / 5)
    num, den = 2 * np.sum(a * s) + 1, np.sum(a) + np.sum(s) + 1
    d_s = -(2 * a * den - num) / den**2 * s * (1 - s) / 5
    return 1 - num / den, np.array([np.sum(d_s * x), np.sum(d_s)])


def test_the_student_trains_on_the_soft_dice_against_the_teachers_soft_labels(stepped):
    x, y = stepped["batch"]
    student, loss = stepped["distillation", "student"]
    teacher_wb = pixel_weights(stepped["distillation", "teacher"][0])  # the trained teacher the student learnt from
    expected_loss, grad = _soft_dice_loss(teacher_wb, W, B, x)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    w, b = np.array([W, B]) - LR * grad
    np.testing.assert_allclose(pixel_weights(student), [w, b], rtol=1e-5)
    assert student.evaluate(x, y, verbose=0) == pytest.approx(_soft_dice_loss(teacher_wb, w, b, x)[0], rel=1e-5)
    assert pixel_weights(stepped["distillation", "teacher"][0]) == pytest.approx(teacher_wb)  # frozen


def test_the_attack_inside_training_uses_inference_mode_batch_norm():
    """β = 0: the update is ordinary training on the example alone, which must be the package's FGSM
    (training=False) of the initial weights; this network's moving statistics are far from its batch's."""
    x, y = batch()
    reference = bn_net()
    reference.set_weights(bn_net().get_weights())
    x_adv = fgsm(reference, x, y, EPS, loss="bce", jit_compile=False).numpy()
    assert np.abs(x_adv - x).max() == pytest.approx(EPS)
    probe = bn_net()  # (a training-mode call moves the moving statistics: not on the reference)
    assert np.abs(probe(x, training=False).numpy() - probe(x, training=True).numpy()).max() > 0.05  # modes differ
    reference.compile(keras.optimizers.SGD(LR), loss="bce", jit_compile=False)
    reference.train_on_batch(x_adv, y)
    defended, _ = _stepped(resolve_defense("adversarial", {"epsilon": EPS, "beta": 0}), bn_net(), x=x, y=y)
    for ours, theirs in zip(defended.weights, reference.weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=ours.path)


@pytest.fixture(scope="module")
def plain_step():
    """The batch-norm net after one ordinary Adam step (Keras' own train_step)."""
    x, y = batch()
    plain = bn_net()
    plain.compile(keras.optimizers.Adam(0.01), loss="bce", jit_compile=False)
    plain.train_on_batch(x, y)
    return plain


@pytest.mark.parametrize(("name", "options"), [("adversarial", {"beta": 1}), ("trades", {"beta": 0})])
def test_without_the_adversarial_term_it_is_ordinary_training(plain_step, name, options):
    x, y = batch()
    defended, _ = _stepped(resolve_defense(name, options), bn_net(), x=x, y=y, optimizer=keras.optimizers.Adam(0.01))
    assert len(defended.weights) == len(plain_step.weights) == 8  # batch norm's moving statistics included
    for ours, theirs in zip(defended.weights, plain_step.weights):
        np.testing.assert_array_equal(ours, theirs, err_msg=ours.path)


def test_validation_is_the_clean_deterministic_objective(stepped):
    x, y = stepped["batch"]
    model, _ = stepped["pgd_adversarial", "model"]
    w, b = pixel_weights(model)
    assert model.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0) == pytest.approx(
        bce(y, sigmoid(w * x + b)), rel=1e-5)


@pytest.mark.parametrize(("name", "role"), ROLES)
def test_every_defense_and_role_round_trips_through_keras_in_safe_mode(stepped, tmp_path, name, role):
    x, _ = stepped["batch"]
    model = stepped[name, role][0]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded) is DefendedModel
    assert (loaded.defense, loaded.role, loaded.seed) == (resolve_defense(name, OPTIONS[name]), role, SEED)
    assert loaded.get_layer("logits").name == "logits" and len(loaded.weights) == len(model.weights)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_loaded_student_predicts_but_refuses_to_train_without_its_teacher(stepped, tmp_path):
    x, y = stepped["batch"]
    student, teacher = stepped["distillation", "student"][0], stepped["distillation", "teacher"][0]
    student.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert loaded.teacher is None and student.teacher is teacher
    with pytest.raises(ValueError, match=r"^pixel: a distillation student trains and validates against its "
                                         r"teacher, which is not saved with it; use DefendedModel.wrap[^\n]*$"):
        loaded.fit(x, y, epochs=1, verbose=0)
    again = DefendedModel.wrap(loaded, loaded.defense, role="student", teacher=teacher)
    again.compile(keras.optimizers.SGD(LR), loss="bce", jit_compile=False)
    assert again.evaluate(x, y, verbose=0) == pytest.approx(student.evaluate(x, y, verbose=0), rel=1e-6)


def test_the_wrapped_model_is_the_network_itself():
    network = bn_net()
    x, y = batch()
    model = DefendedModel.wrap(network, "adversarial")
    assert model.get_layer("logits") is network.get_layer("logits") and model.layers == network.layers
    np.testing.assert_array_equal(model.predict(x, verbose=0), network.predict(x, verbose=0))
    assert model.defense == resolve_defense("adversarial") and model.role == "model"
    # The package's tools work on it unchanged.
    np.testing.assert_array_equal(fgsm(model, x, y, EPS, jit_compile=False), fgsm(network, x, y, EPS, jit_compile=False))
    copy = float32_copy(model)
    assert type(copy) is DefendedModel and copy.defense == model.defense
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    set_output_prior(model, 0.05)
    assert network.get_layer("logits").bias.numpy() == pytest.approx(np.log(0.05 / 0.95))


def test_a_sequential_network_is_defended_and_round_trips(tmp_path):
    x, y = batch()
    sequential = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Conv2D(2, 3, padding="same"),
                                   keras.layers.Conv2D(1, 1, name="logits"), keras.layers.Activation("sigmoid")],
                                  name="sequential")
    model = DefendedModel.wrap(sequential, "fast_adversarial")
    model.compile(keras.optimizers.Adam(0.01), loss="bce", jit_compile=False)
    assert np.isfinite(model.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0])
    np.testing.assert_array_equal(model.predict(x, verbose=0), sequential.predict(x, verbose=0))
    model.save(tmp_path / "sequential.keras")
    loaded = keras.saving.load_model(tmp_path / "sequential.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"defense": "distillation"}, "bn_net: role 'model' does not go with the distillation defense"),
    ({"defense": "trades", "role": "teacher"}, "role 'teacher' does not go with the trades defense"),
    ({"defense": "distillation", "role": "student"}, "bn_net: a distillation student needs its trained teacher"),
    ({"defense": "adversarial", "role": "judge"}, "bn_net: role must be one of model, teacher, student, got 'judge'"),
    ({"defense": "madry"}, "--defense: unknown defense 'madry'"),
    ({"defense": 3}, "defense must be a DefenseConfig, a defense name or its to_json() dict, got int"),
])
def test_bad_wrapping_is_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match="^[^\n]*$") as error:
        DefendedModel.wrap(bn_net(), **kwargs)
    assert message in str(error.value)


def test_networks_it_cannot_defend_are_refused_in_one_line():
    inp = keras.Input((8, 8, 1))
    two = keras.Model(inp, [keras.layers.Conv2D(1, 1)(inp), keras.layers.Conv2D(1, 1)(inp)], name="two_heads")
    with pytest.raises(ValueError, match="^two_heads: a defended network must have one output, it has 2$"):
        DefendedModel.wrap(two, "adversarial")
    no_logits = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(inp), name="plain")
    with pytest.raises(ValueError, match="^plain: needs exactly one 'logits' layer"):
        DefendedModel.wrap(no_logits, "distillation", role="teacher")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="^DefendedModel.wrap needs a functional or Sequential keras.Model"):
        DefendedModel.wrap(Subclassed(), "adversarial")


def test_a_loss_keras_knows_by_no_name_is_refused_for_the_attack_in_one_line():
    x, y = batch()
    model = DefendedModel.wrap(pixel_net(), "adversarial")
    model.compile(keras.optimizers.SGD(LR), loss="crossentropy", jit_compile=False)
    with pytest.raises(ValueError, match=r"^pixel: the adversarial defense attacks the compiled loss, and Keras does "
                                         r"not know the loss 'crossentropy' by name; compile with a loss object"):
        model.train_on_batch(x, y)


def test_fit_with_xla_takes_the_same_step_as_graph_mode(stepped):
    x, y = stepped["batch"]
    graph, graph_loss = stepped["adversarial", "model"]
    xla, xla_loss = _stepped(resolve_defense("adversarial", OPTIONS["adversarial"]), x=x, y=y, jit=True)
    assert xla_loss == pytest.approx(graph_loss, rel=1e-5)
    np.testing.assert_allclose(pixel_weights(xla), pixel_weights(graph), rtol=1e-5)
    # The iterative attacks (a tf.while_loop) compile too; their random starts differ from graph mode's
    # (TensorFlow's stateless generators draw other numbers under XLA), so only the run is checked.
    model, loss = _stepped(resolve_defense("trades", OPTIONS["trades"]), x=x, y=y, jit=True)
    assert np.isfinite(loss) and np.all(pixel_weights(model) != [W, B])


def test_fit_under_mixed_float16():
    x, y = batch()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        network = bn_net()
        model = DefendedModel.wrap(network, resolve_defense("pgd_adversarial", {"steps": 2}))
        model.compile(keras.optimizers.Adam(0.01), loss="bce", jit_compile=False)
        before = [w.numpy() for w in model.trainable_weights]
        history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert network.get_layer("conv").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.trainable_weights, before))
