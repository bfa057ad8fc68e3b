"""The rows of the gradient-masking check, told apart from the deployed network's by their ``attack_params``.

Defensive distillation is known to mask gradients (Carlini & Wagner 2016): deployed at T = 1, the student's
sigmoid saturates and the attack's gradient vanishes, so the attack, not the network, gets weaker. The check
attacks the same network through its training temperature (:func:`tfrobseg.defenses.views.masking_views`);
its rows go into the unit's ``metrics.csv`` beside the deployed ones, with :data:`VIEW_KEY` added to their
``attack_params``, so that the tables (which take the run's first attack and its parameters) keep the deployed
rows only, and the defenses report reads both. Plain Python: the reporting reads it without TensorFlow.
"""

from __future__ import annotations

import json

from tfrobseg.defenses.config import DefenseConfig

__all__ = ["DEPLOYED", "VIEW_KEY", "checked_temperatures", "view_of", "with_view"]

#: The key of the check's temperature in the ``attack_params`` of its rows.
VIEW_KEY = "attacked_at_temperature"
#: The view of rows attacked as deployed (every row without :data:`VIEW_KEY`).
DEPLOYED = "deployed"


def checked_temperatures(defense: DefenseConfig | None) -> tuple[float, ...]:
    """The temperatures at which a unit trained under ``defense`` is attacked besides as deployed: the training
    temperature of a distilled network, none for every other defense."""
    return (float(defense["temperature"]),) if defense is not None and defense.name == "distillation" else ()


def with_view(attack_params: str, temperature: float) -> str:
    """The ``attack_params`` of the check's rows: the attack's own with the temperature added (an ensemble's
    member list goes under ``"members"``)."""
    params = json.loads(attack_params)
    body = params if isinstance(params, dict) else {"members": params}
    return json.dumps({**body, VIEW_KEY: float(temperature)}, sort_keys=True)


def view_of(attack_params: str) -> tuple[str, str]:
    """``(view, the attack's own attack_params)`` of a row: ``("deployed", params)``, or ``("T=100", params)``
    for a row of the check (the inverse of :func:`with_view`)."""
    params = json.loads(attack_params)
    if not isinstance(params, dict) or VIEW_KEY not in params:
        return DEPLOYED, attack_params
    params = dict(params)
    temperature = params.pop(VIEW_KEY)
    own = params["members"] if set(params) == {"members"} else params
    return f"T={temperature:g}", json.dumps(own, sort_keys=True)
