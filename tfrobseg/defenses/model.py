"""A Keras network whose ``train_step`` is a defense's objective: :class:`DefendedModel`.

``DefendedModel.wrap(network, defense)`` is the network itself (a functional subclass over the very same
layers: ``get_layer``, the attacks, :func:`tfrobseg.training.set_output_prior` and ``float32_copy`` work
unchanged) that trains with ``model.fit`` under the defense's objective, with XLA (``jit_compile=True``) and
mixed precision, and saves to ``.keras`` with its defense (loads with ``safe_mode=True``). Its output, the
deployed prediction, is the network's own (T = 1) for every defense and role.

What one ``train_step`` does (:mod:`tfrobseg.defenses.objectives` has the pieces and their sources):

* ``adversarial`` / ``fast_adversarial`` / ``pgd_adversarial``: the example (FGSM, FGSM from a random start,
  PGD) from the current weights with batch norm in inference mode, then one update on
  ``β · L(x, y) + (1 − β) · L(x_adv, y)``. β = 1 skips the attack and the adversarial pass (exactly
  ordinary training, batch-norm statistics included), β = 0 the clean pass;
* ``trades``: the example maximising the per-pixel KL, then one update on
  ``L(x, y) + β · mean KL(f(x) ‖ f(x_adv))`` (β = 0 skips the attack);
* ``uniform_noise`` / ``gaussian_noise``: Liu et al.'s schedule, two updates per batch: one on the noisy
  copy, then one on the batch itself; the reported loss is the mean of the two;
* ``distillation``, role ``"teacher"``: the compiled loss on the softened outputs ``sigmoid(logits / T)``
  (softmax over C > 1 channels); role ``"student"``: 1 − soft Dice of its softened logits against the frozen
  teacher's (:func:`tfrobseg.losses.distillation.soft_dice_distillation_loss` at T, its counts pooled over the
  batch like the study's Dice loss), the compiled loss unused.

The clean and the adversarial passes are separate training-mode calls, so batch norm's moving statistics are
updated by both (as in Zhang et al.'s TRADES code). The noise defenses advance the optimizer's step count twice
per batch. Random numbers (random starts, noise) come from the model's ``keras.random.SeedGenerator(seed)``:
the same seed draws the same numbers, though other ones with XLA than without (TensorFlow's stateless
generators compile to another algorithm).

``test_step`` (validation, hence early stopping and the kept best weights) is the *clean* objective: the
compiled loss of the deployed output for role ``"model"`` (no adversarial or noise term: deterministic, and
what the deployed network is judged by), the loss at T for the teacher, the distillation loss at T for the
student. Metrics passed to ``compile`` are computed on the deployed (T = 1) output; in training on the clean
pass, or on the adversarial one when β = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.gradient import Objective, loss_objective
from tfrobseg.defenses import objectives
from tfrobseg.defenses.config import DefenseConfig, resolve_defense
from tfrobseg.defenses.views import logits_layer, network_input
from tfrobseg.losses.distillation import SoftDiceDistillationLoss

__all__ = ["ROLES", "DefendedModel"]

#: ``model``: every defense but distillation; ``teacher`` / ``student``: the two networks of distillation.
ROLES = ("model", "teacher", "student")
_NOISE = ("uniform_noise", "gaussian_noise")


def _as_defense(defense: DefenseConfig | Mapping[str, Any] | str) -> DefenseConfig:
    if isinstance(defense, DefenseConfig):
        return defense
    if isinstance(defense, str):
        return resolve_defense(defense)
    if isinstance(defense, Mapping):
        return DefenseConfig.from_json(defense)
    raise ValueError(f"defense must be a DefenseConfig, a defense name or its to_json() dict, got "
                     f"{type(defense).__name__}")


def _replicas() -> int:
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


@keras.saving.register_keras_serializable(package="tfrobseg")
class DefendedModel(keras.Model):
    """A functional network trained under a defense (module docstring); build it with :meth:`wrap`.

    Args (keyword, after the functional model's ``inputs``, ``outputs``, ``name``):
        defense: the :class:`~tfrobseg.defenses.config.DefenseConfig` (or a name, or its ``to_json()``).
        role: ``"model"``, or ``"teacher"`` / ``"student"`` for distillation (:data:`ROLES`).
        teacher: the student's trained teacher (a keras.Model with a ``logits`` layer), not trained here and
            not saved with the student: a loaded student predicts, but refuses ``fit`` / ``evaluate``
            until wrapped again with its teacher.
        seed: seed of the random starts and noise (a ``keras.random.SeedGenerator``).
    """

    def __init__(self, *args: Any, defense: DefenseConfig | Mapping[str, Any] | str | None = None,
                 role: str = "model", teacher: keras.Model | None = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if defense is None:
            raise ValueError(f"{self.name}: DefendedModel needs a defense (use DefendedModel.wrap(network, defense))")
        self.defense = _as_defense(defense)
        distilled = self.defense.name == "distillation"
        if role not in ROLES:
            raise ValueError(f"{self.name}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if distilled == (role == "model"):
            raise ValueError(f"{self.name}: role {role!r} does not go with the {self.defense.name} defense "
                             "(distillation trains a 'teacher' and a 'student'; every other defense a 'model')")
        if len(self.outputs) != 1:
            raise ValueError(f"{self.name}: a defended network must have one output, it has {len(self.outputs)}")
        if role != "student" and teacher is not None:
            raise ValueError(f"{self.name}: only a distillation student takes a teacher")
        self.role = role
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # The initial state, for a reused model to draw the same numbers again (reset_random_state).
        self._initial_random_state = np.array(keras.ops.convert_to_numpy(self.seed_generator.state))
        # The networks below share this model's layers or are the teacher: set without Keras' attribute
        # tracking, so that neither is saved (or counted) as part of this model.
        heads = None
        if distilled:
            heads = keras.Model(network_input(self), [logits_layer(self).output, self.outputs[0]],
                                name=f"{self.name}_heads")
        teacher_logits = None
        if teacher is not None:
            teacher_logits = keras.Model(network_input(teacher), logits_layer(teacher).output,
                                         name=f"{teacher.name}_logits")
        object.__setattr__(self, "_heads", heads)
        object.__setattr__(self, "_teacher", teacher)
        object.__setattr__(self, "_teacher_logits", teacher_logits)

    @classmethod
    def wrap(cls, network: keras.Model, defense: DefenseConfig | Mapping[str, Any] | str, *, role: str = "model",
             teacher: keras.Model | None = None, seed: int = 0) -> DefendedModel:
        """``network`` (functional or Sequential, built, uncompiled or not) trained under ``defense``, sharing
        its layers and weights; compile the result and call ``fit``. A student needs its trained ``teacher``."""
        inputs = getattr(network, "inputs", None) if isinstance(network, keras.Model) else None
        if not inputs:
            raise ValueError(f"DefendedModel.wrap needs a functional or Sequential keras.Model with its inputs "
                             f"known, got {type(network).__name__} {getattr(network, 'name', '')!r}".rstrip())
        if role == "student" and teacher is None:
            raise ValueError(f"{network.name}: a distillation student needs its trained teacher (teacher=...)")
        outputs = network.outputs
        return cls(inputs=network_input(network), outputs=outputs[0] if len(outputs) == 1 else outputs,
                   name=network.name, defense=defense, role=role, teacher=teacher, seed=seed)

    @property
    def teacher(self) -> keras.Model | None:
        """The student's teacher (``None`` for other roles and for a loaded student)."""
        return self._teacher

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(defense=self.defense.to_json(), role=self.role, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict | None = None) -> DefendedModel:
        config = dict(config)
        options = {"defense": config.pop("defense"), "role": config.pop("role", "model"),
                   "seed": config.pop("seed", 0)}
        network = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(inputs=network_input(network), outputs=network.outputs[0], name=network.name,
                   trainable=network.trainable, **options)

    def reset_random_state(self) -> None:
        """Restart the random starts and noise from the seed (a reused model draws the same numbers again)."""
        self.seed_generator.state.assign(self._initial_random_state)

    # -- training -------------------------------------------------------------------------------------------

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        name = self.defense.name
        if self.role == "teacher":
            loss, y_pred = self._descend(lambda: self._teacher_loss(x, y, sample_weight, training=True))
        elif self.role == "student":
            target = self._teacher_targets(x)
            loss, y_pred = self._descend(lambda: self._student_loss(target, x, sample_weight, training=True))
        elif name in _NOISE:
            noisy = self._noisy(x)
            noisy_loss, _ = self._descend(lambda: self._clean_loss(noisy, y, sample_weight))
            clean_loss, y_pred = self._descend(lambda: self._clean_loss(x, y, sample_weight))
            loss = 0.5 * (noisy_loss + clean_loss)
        elif name == "trades":
            # The examples are made before the update's tape: it records only the training passes.
            x_adv = self._trades_example(x) if self.defense["beta"] > 0 else None
            loss, y_pred = self._descend(lambda: self._trades_loss(x, y, sample_weight, x_adv))
        else:
            x_adv = self._adversarial(x, y) if self.defense["beta"] < 1 else None
            loss, y_pred = self._descend(lambda: self._mixed_loss(x, y, sample_weight, x_adv))
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data: Any) -> dict[str, Any]:
        if self.role == "model":
            return super().test_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.role == "teacher":
            loss, y_pred = self._teacher_loss(x, y, sample_weight, training=False)
        else:
            loss, y_pred = self._student_loss(self._teacher_targets(x), x, sample_weight, training=False)
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _descend(self, objective: Callable[[], tuple[tf.Tensor, tf.Tensor]]) -> tuple[tf.Tensor, tf.Tensor]:
        """One optimizer update on ``objective() -> (loss, prediction)``, as Keras' own ``train_step`` makes it
        (the loss scaled for mixed precision by the optimizer); returns the loss and the prediction."""
        with tf.GradientTape() as tape:
            loss, y_pred = objective()
            scaled = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        self.optimizer.apply(tape.gradient(scaled, weights), weights)
        return loss, y_pred

    def _track_loss(self, loss: tf.Tensor, x: Any) -> None:
        """The reported ``loss``: Keras' loss tracker (keras-io's custom ``train_step`` pattern), the loss of all
        replicas together as Keras reports it, weighted by the batch size."""
        replicas = _replicas()
        value = loss * float(replicas) if replicas > 1 else loss
        batch = tf.shape(keras.tree.flatten(x)[0])[0]
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(value, sample_weight=batch)

    def _clean_loss(self, x: Any, y: Any, sample_weight: Any) -> tuple[tf.Tensor, tf.Tensor]:
        y_pred = self(x, training=True)
        return self.compute_loss(x, y, y_pred, sample_weight, training=True), y_pred

    def _mixed_loss(self, x: Any, y: Any, sample_weight: Any, x_adv: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        beta = float(self.defense["beta"])
        if beta == 1.0:
            return self._clean_loss(x, y, sample_weight)
        adversarial, y_adv = self._clean_loss(x_adv, y, sample_weight)
        if beta == 0.0:
            return adversarial, y_adv
        clean, y_pred = self._clean_loss(x, y, sample_weight)
        return objectives.mix(beta, clean, adversarial), y_pred

    def _trades_loss(self, x: Any, y: Any, sample_weight: Any, x_adv: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        natural, y_pred = self._clean_loss(x, y, sample_weight)
        if x_adv is None:
            return natural, y_pred
        y_adv = self(x_adv, training=True)
        # β / replicas: the KL's mean is this replica's, scaled like Keras scales its losses under a strategy.
        beta = self.defense["beta"] / _replicas()
        return objectives.trades_loss(natural, y_pred, y_adv, beta, softmax=self._softmax()), y_pred

    def _trades_example(self, x: Any) -> tf.Tensor:
        d = self.defense
        return objectives.trades_example(self, x, d["epsilon"], d["steps"], d["step_factor"], self.seed_generator,
                                         softmax=self._softmax(), scale=objectives.attack_loss_scale(self))

    def _adversarial(self, x: Any, y: Any) -> tf.Tensor:
        d, objective, scale = self.defense, self._attack_objective(), objectives.attack_loss_scale(self)
        if d.name == "adversarial":
            return objectives.fgsm_example(self, x, y, objective, d["epsilon"], scale=scale)
        if d.name == "fast_adversarial":
            return objectives.fast_fgsm_example(self, x, y, objective, d["epsilon"], d["step_factor"],
                                                self.seed_generator, scale=scale)
        return objectives.pgd_example(self, x, y, objective, d["epsilon"], d["steps"], d["step_factor"],
                                      self.seed_generator, scale=scale)

    def _noisy(self, x: Any) -> tf.Tensor:
        if self.defense.name == "uniform_noise":
            return objectives.uniform_noise(x, self.defense["radius"], self.seed_generator)
        return objectives.gaussian_noise(x, self.defense["sigma"], self.seed_generator)

    def _attack_objective(self) -> Objective:
        """Each image's own compiled loss (:func:`tfrobseg.attacks.gradient.loss_objective`); a loss given to
        ``compile`` by name is the function Keras resolves it to (``"dice"`` is Keras' Dice, not tfrobseg's)."""
        loss = self.loss
        if isinstance(loss, str):
            try:
                loss = keras.losses.get(loss)
            except ValueError:
                raise ValueError(f"{self.name}: the {self.defense.name} defense attacks the compiled loss, and Keras "
                                 f"does not know the loss {loss!r} by name; compile with a loss object (e.g. "
                                 "tfrobseg.losses.get_loss(name))") from None
        if not callable(loss):
            # ValueError, like every bad argument in tfrobseg (the contract), not TypeError.
            raise ValueError(  # noqa: TRY004
                f"{self.name}: the {self.defense.name} defense attacks the compiled loss, which must be one loss "
                f"(a name or a callable), got {type(loss).__name__}")
        return loss_objective(loss)

    def _softmax(self) -> bool:
        return self.outputs[0].shape[-1] != 1

    # -- distillation ---------------------------------------------------------------------------------------

    def _teacher_loss(self, x: Any, y: Any, sample_weight: Any, *, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        logits, y_pred = self._heads(x, training=training)
        soft = objectives.soft_labels(logits, self.defense["temperature"])
        return self.compute_loss(x, y, soft, sample_weight, training=training), y_pred

    def _teacher_targets(self, x: Any) -> tf.Tensor:
        if self._teacher_logits is None:
            raise ValueError(f"{self.name}: a distillation student trains and validates against its teacher, which "
                             "is not saved with it; use DefendedModel.wrap(student, defense, role='student', "
                             "teacher=...)")
        return tf.stop_gradient(tf.cast(self._teacher_logits(x, training=False), tf.float32))

    def _student_loss(self, teacher_logits: tf.Tensor, x: Any, sample_weight: Any, *,
                      training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        logits, y_pred = self._heads(x, training=training)
        softmax = self._softmax()
        # Liu et al.'s soft Dice leaves the background class out of its mean (eq. 5); one channel has none.
        distill = SoftDiceDistillationLoss(temperature=self.defense["temperature"], from_logits=True, softmax=softmax,
                                           include_background=not softmax)
        loss = distill(teacher_logits, tf.cast(logits, tf.float32), sample_weight=sample_weight)
        extra = [tf.cast(tf.reduce_sum(term), tf.float32) / _replicas() for term in self.losses]
        return (tf.add_n([loss, *extra]) if extra else loss), y_pred
