"""Train a network under a defense with the study's protocol: :func:`train_defended`.

Every defense but distillation is one :func:`tfrobseg.training.train_model` run of the wrapped network.
Defensive distillation is two (Papernot et al. 2016; Liu et al., paper 002): the teacher, trained with the
loss on its outputs at temperature T, into ``out_dir / "teacher"`` (its ``best.keras`` and
``history.csv``); then the student, of the same architecture and seed, trained at T against the teacher's
softened outputs, into ``out_dir``. The student is the defended network: its ``best.keras`` is what is
attacked, deployed at T = 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from pathlib import Path

import keras
import tensorflow as tf

from tfrobseg.defenses.config import DefenseConfig
from tfrobseg.training.config import TrainConfig
from tfrobseg.training.fit import TrainResult, train_model

__all__ = ["TEACHER_DIR", "train_defended"]

#: The teacher's folder inside a distilled run's ``out_dir``.
TEACHER_DIR = "teacher"


def train_defended(
    build_fn: Callable[[], keras.Model],
    loss: keras.losses.Loss | Callable | str,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset | None,
    *,
    defense: DefenseConfig | None,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "train",
    position: int = 0,
    reuse_key: Hashable | None = None,
) -> TrainResult:
    """Train the network of ``build_fn`` under ``defense`` (``None``: undefended, a plain
    :func:`~tfrobseg.training.train_model`); the arguments are :func:`~tfrobseg.training.train_model`'s.

    Returns:
        The defended network's :class:`~tfrobseg.training.fit.TrainResult`; for distillation the student's,
        with the teacher's run in its ``teacher``.
    """
    common = {"config": config, "progress": progress, "position": position, "reuse_key": reuse_key}
    if defense is None or defense.name != "distillation":
        return train_model(build_fn, loss, train_data, val_data, out_dir=out_dir, desc=desc, defense=defense, **common)
    teacher = train_model(build_fn, loss, train_data, val_data, out_dir=None if out_dir is None else
                          Path(out_dir) / TEACHER_DIR, desc=f"{desc} (teacher)", defense=defense, role="teacher",
                          **common)
    student = train_model(build_fn, loss, train_data, val_data, out_dir=out_dir, desc=f"{desc} (student)",
                          defense=defense, role="student", teacher=teacher.model, **common)
    student.teacher = teacher
    return student
