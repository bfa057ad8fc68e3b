"""From DICOM to training data: discovery, reading, masks, preprocessing, records, the manifest, the split.

Submodules, one concern each (import them directly; this package imports nothing so that reading
a prepared folder never loads SimpleITK):

* :mod:`~tfrobseg.dataset.dicom`, :mod:`~tfrobseg.dataset.discovery`, :mod:`~tfrobseg.dataset.masks`:
  find and read a patient's T2 axial series and whole-gland masks (SimpleITK).
* :mod:`~tfrobseg.dataset.preprocessing`, :mod:`~tfrobseg.dataset.config`, :mod:`~tfrobseg.dataset.prepare`:
  the study's preprocessing, its parameters, and the per-patient and cohort drivers.
* :mod:`~tfrobseg.dataset.records`, :mod:`~tfrobseg.dataset.manifest`, :mod:`~tfrobseg.dataset.splits`:
  what a prepared folder holds (TFRecords, ``manifest.json``, the seeded patient split).
* :mod:`~tfrobseg.dataset.pipeline`: ``tf.data`` datasets for training and evaluation (TensorFlow only).
* :mod:`~tfrobseg.dataset.volumes`: the 3D path: whole volumes, random patches, volume datasets for the
  attacks, sliding-window inference.
* :mod:`~tfrobseg.dataset.synthetic`, :mod:`~tfrobseg.dataset.preview`, :mod:`~tfrobseg.dataset.cli`:
  the built-in SYNTHETIC cohort, a QA montage, and the ``data_prep/prostatex.py`` command line.
"""
