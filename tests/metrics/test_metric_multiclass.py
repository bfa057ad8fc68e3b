"""tfrobseg.metrics.per_class_metrics: per-class metrics of label maps, equal to MedPy per class on the built-in
cohort's zonal labels."""

import numpy as np
import pytest
from metric_cases import MEDPY
from scipy import ndimage

from tfrobseg.dataset.synthetic import make_phantom
from tfrobseg.metrics import METRIC_KEYS, per_class_metrics


@pytest.fixture(scope="module")
def zones():
    """A built-in phantom's zonal map (0, 1 PZ, 2 TZ) around its gland, and its spacing in array order (z, y, x)."""
    ph = make_phantom(2)
    box = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in ndimage.find_objects((ph["zones"] > 0).astype(np.uint8))[0])
    return ph["zones"][box].astype(np.int64), tuple(ph["spacing"][::-1])


def _perturbed(gt: np.ndarray) -> np.ndarray:
    """A prediction: the map moved one voxel to the right, its TZ grown into the PZ by one voxel in-plane."""
    pred = np.roll(gt, 1, axis=2)
    grown = ndimage.binary_dilation(pred == 2, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    pred[grown & (pred == 1)] = 2
    return pred


def test_equals_medpy_per_class_on_the_zones(zones):
    gt, spacing = zones
    pred = _perturbed(gt)
    ours = per_class_metrics(pred, gt, spacing=spacing, names={1: "PZ", 2: "TZ"})
    assert list(ours) == ["PZ", "TZ"] and all(list(m) == list(METRIC_KEYS) for m in ours.values())
    for name, label in (("PZ", 1), ("TZ", 2)):
        p, g = pred == label, gt == label
        for key, reference in MEDPY.items():
            assert ours[name][key] == pytest.approx(reference(p, g, spacing), abs=1e-9), (name, key)
    assert 0.5 < ours["PZ"]["dice"] < 0.99 and 0.5 < ours["TZ"]["dice"] < 0.99  # a real, imperfect prediction
    assert ours["PZ"]["hd95"] > 0 and ours["TZ"]["assd"] > 0


def test_classes_and_names():
    gt = np.zeros((6, 6), np.uint8)
    gt[1:3, 1:3], gt[3:5, 3:5] = 1, 3
    pred = gt.copy()
    pred[3, 3] = 0
    found = per_class_metrics(pred, gt)
    assert list(found) == [1, 3] and found[1]["dice"] == 1.0
    assert found[3]["dice"] == pytest.approx(2 * 3 / (3 + 4))  # 3 of the 4 voxels found
    assert found[3]["sensitivity"] == pytest.approx(0.75) and found[3]["precision"] == 1.0
    absent = per_class_metrics(pred, gt, classes=[2], names=["stroma"])["stroma"]
    assert absent["dice"] == 1.0 and absent["hd95"] == 0.0 and absent["empty_pred"] and absent["empty_gt"]
    floats = per_class_metrics(pred.astype(np.float32), gt.astype(np.float64), classes=[3])
    assert floats[3] == found[3]


@pytest.mark.parametrize("call, message", [
    (lambda p, g: per_class_metrics(p * 0.5, g), "integer labels; take the argmax"),
    (lambda p, g: per_class_metrics(p[:2], g), "shapes differ"),
    (lambda p, g: per_class_metrics(p > 0, g), "numeric label map"),
    (lambda p, g: per_class_metrics(p, g, classes=[1, 1]), "must not repeat"),
    (lambda p, g: per_class_metrics(p, g, classes=[1, 2], names=["a"]), "1 entries for 2 classes"),
    (lambda p, g: per_class_metrics(p, g, classes=[1, 2], names={1: "a"}), r"no entry for class\(es\) \[2\]"),
    (lambda p, g: per_class_metrics(p, g, classes=[1, 2], names=["a", "a"]), "distinct"),
    (lambda p, g: per_class_metrics(p, g, spacing=(1.0, 2.0)), "spacing has 2 entries but the masks have 3"),
])
def test_bad_input(call, message):
    labels = np.zeros((3, 4, 4), np.int64)
    labels[1, 1:3, 1:3] = 1
    with pytest.raises(ValueError, match=message):
        call(labels, labels)
