"""The names of the attack kinds that code without TensorFlow needs (command-line help, tables, figures), and
the ensemble's ``attack_params``.

:mod:`tfrobseg.attacks` imports TensorFlow; the reporting and the option parsing must not, so what they
share with it lives here, once.
"""

import json
from collections.abc import Sequence

#: The worst-case reduction over member attacks (:mod:`tfrobseg.attacks.ensemble`): its rows' ``attack``.
ENSEMBLE = "ensemble"
#: The ensemble's members when none are chosen: the study's FGSM and the strongest segmentation attacks.
DEFAULT_MEMBERS: tuple[str, ...] = ("fgsm", "pgd", "segpgd", "cospgd", "apgd", "dag")
#: Random perturbations in the attack's L∞ box: the controls that separate "adversarial" from "noisy".
NOISE_CONTROLS: tuple[str, ...] = ("noise", "gaussian", "rician")


def members_params(members: Sequence[tuple[str, str]]) -> str:
    """The ``attack_params`` of ensemble rows: the canonical JSON list of the members, in order, each
    ``{"attack": name, "params": <its attack_params>}``."""
    return json.dumps([{"attack": name, "params": json.loads(params)} for name, params in members], sort_keys=True)
