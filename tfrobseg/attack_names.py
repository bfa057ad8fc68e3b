"""The names of the attack kinds that code without TensorFlow needs (command-line help, tables, figures).

:mod:`tfrobseg.attacks` imports TensorFlow; the reporting and the option parsing must not, so the names
they share with it live here, once.
"""

#: The worst-case reduction over member attacks (:mod:`tfrobseg.attacks.ensemble`): its rows' ``attack``.
ENSEMBLE = "ensemble"
#: The ensemble's members when none are chosen: the study's FGSM and the strongest segmentation attacks.
DEFAULT_MEMBERS: tuple[str, ...] = ("fgsm", "pgd", "segpgd", "cospgd", "apgd", "dag")
#: Random perturbations in the attack's L∞ box: the controls that separate "adversarial" from "noisy".
NOISE_CONTROLS: tuple[str, ...] = ("noise", "gaussian", "rician")
