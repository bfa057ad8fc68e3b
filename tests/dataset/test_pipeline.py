"""tfrobseg.dataset.pipeline and the manifest's split, on the built-in SYNTHETIC cohort prepared once."""

import json
import time

import numpy as np
import pytest
import tensorflow as tf

from tfrobseg.dataset import pipeline as data
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.synthetic import BUILTIN_CONFIG, prepare_builtin


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    out = prepare_builtin(tmp_path_factory.mktemp("builtin") / "builtin", n_patients=8, workers=2)
    return out, Manifest.read(out)


def _patients_in(ds):
    return {p.decode() for batch in ds for p in batch["patient_id"].numpy()}


def test_builtin_cohort_manifest(builtin):
    out, m = builtin
    assert m.synthetic is True and "SYNTHETIC" in m.description
    assert len(m.patients) == 8 and m.skipped == {}
    # 64-76 mm covered by 3.0 / 3.6 mm slices, resampled to 3.0 mm: 21-26 slices.
    assert all(e.labelled and e.second_reader and 21 <= e.n_slices <= 26 for e in m.patients.values())
    assert m.parameters == BUILTIN_CONFIG and m.seed == 0
    assert (out / "raw" / "README.txt").read_text().startswith("SYNTHETIC")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert prepare_builtin(out, n_patients=8, workers=2) == out  # idempotent: returns at once
    assert time.perf_counter() - t0 < 5 and (out / "manifest.json").stat().st_mtime_ns == stamp


def test_splits_and_folds_are_disjoint_by_patient(builtin):
    out, m = builtin
    train, val, test = (m.patients_of(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 1, 1)  # 70 % / 15 % / 15 % of 8, rounded (splits.split_sizes)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert sorted(train + val + test) == m.patients_of("all")
    folds = [m.patients_of("train", fold=k) for k in range(3)]
    assert sorted(p for f in folds for p in f) == sorted(train)
    for k in range(3):
        rest = m.patients_of("train", exclude_fold=k)
        assert not set(rest) & set(folds[k]) and sorted(rest + folds[k]) == sorted(train)
    # The datasets hold exactly the patients asked for.
    for ids in (train, val, test, folds[0]):
        assert _patients_in(data.make_dataset(out, ids, batch_size=8)) == set(ids)
    with pytest.raises(ValueError, match="fold must be in"):
        m.patients_of("train", fold=3)
    with pytest.raises(ValueError, match="split must be one of"):
        m.patients_of("holdout")


def test_dataset_elements_follow_the_contract(builtin):
    out, m = builtin
    pid = m.patients_of("test")[0]
    ds = data.make_dataset(out, [pid], batch_size=4)
    batches = list(ds)
    assert sum(b["image"].shape[0] for b in batches) == m.patients[pid].n_slices
    b = batches[0]
    assert b["image"].shape == (4, 256, 256, 1) and b["image"].dtype == tf.float32
    assert b["mask"].dtype == tf.float32 and set(np.unique(b["mask"].numpy())) <= {0.0, 1.0}
    assert b["labelled"].dtype == tf.bool and b["patient_id"].dtype == tf.string
    np.testing.assert_allclose(b["spacing"].numpy(), [[3.0, 0.5, 0.5]] * 4)
    np.testing.assert_array_equal(b["slice_index"].numpy(), [0, 1, 2, 3])
    x, y = data.to_xy(b)
    assert y.shape == (4, 256, 256, 1) and x is b["image"]
    _, y2 = data.to_xy(b, second_reader=True)
    assert y2.shape == (4, 256, 256, 2)
    np.testing.assert_array_equal(y2[..., :1].numpy(), b["mask"].numpy())
    np.testing.assert_array_equal(y2[..., 1:].numpy(), b["mask2"].numpy())
    fg = sum(float(tf.reduce_sum(bb["mask"])) for bb in batches) * 0.75 / 1000
    assert fg == pytest.approx(m.patients[pid].details["mask"]["volume_ml_prepared"], abs=1e-3)


def test_to_xy_falls_back_to_first_reader_without_second():
    mask = tf.constant(np.ones((2, 4, 4, 1), np.float32))
    element = {"image": tf.zeros((2, 4, 4, 1)), "mask": mask, "mask2": tf.zeros((2, 4, 4, 1)),
               "has_mask2": tf.constant([False, True])}
    _, y = data.to_xy(element, second_reader=True)
    np.testing.assert_array_equal(y[0, ..., 1].numpy(), np.ones((4, 4)))
    np.testing.assert_array_equal(y[1, ..., 1].numpy(), np.zeros((4, 4)))
    single = {k: v[0] for k, v in element.items()}
    _, y1 = data.to_xy(single, second_reader=True)
    assert y1.shape == (4, 4, 2)


def test_shuffle_is_seeded_and_batches_drop(builtin):
    out, m = builtin
    ids = m.patients_of("train")
    order = lambda seed: [
        (p.decode(), int(i)) for b in data.make_dataset(out, ids, batch_size=5, shuffle=True, seed=seed)
        for p, i in zip(b["patient_id"].numpy(), b["slice_index"].numpy())]
    first = order(1)
    assert first == order(1) and first != order(2)
    assert len(first) == sum(m.patients[p].n_slices for p in ids)
    ds = data.make_dataset(out, ids, batch_size=5, drop_remainder=True)
    assert all(b["image"].shape[0] == 5 for b in ds)


@pytest.mark.parametrize("cache", [False, True], ids=["records", "cached"])
def test_shuffle_is_a_full_permutation_every_epoch(builtin, monkeypatch, cache):
    # Before issue 12 the buffer was capped (MAX_SHUFFLE_BUFFER = 2048 slices) and the records are
    # read in patient order, so on the study's ~3500 training slices the last patients always came
    # late. The cap is set to 16 slices here (about one patient) to expose that at this size; a
    # full permutation must not depend on it.
    monkeypatch.setattr(data, "MAX_SHUFFLE_BUFFER", 16, raising=False)
    out, m = builtin
    ids = m.patients_of("train")
    everything = sorted((p, k) for p in ids for k in range(m.patients[p].n_slices))

    def epochs(seed, n=2):
        ds = data.make_dataset(out, ids, batch_size=8, shuffle=True, seed=seed, cache=cache)
        return [[(p.decode(), int(k)) for b in ds for p, k in zip(b["patient_id"].numpy(), b["slice_index"].numpy())]
                for _ in range(n)]

    runs = {seed: epochs(seed) for seed in range(3)}
    assert all(sorted(e) == everything for r in runs.values() for e in r)  # each epoch: every slice once
    assert all(r[0] != r[1] for r in runs.values())  # reshuffled every epoch
    assert epochs(1) == runs[1] and runs[0] != runs[1]  # the same seed repeats, another differs
    # The last patient's slices are spread over the whole epoch: their mean position is near the
    # middle (a partial shuffle keeps them near the end), and some come among the first tenth.
    last = ids[-1]
    positions = [i for r in runs.values() for e in r for i, (p, _) in enumerate(e) if p == last]
    assert abs(np.mean(positions) / len(everything) - 0.5) < 0.1
    assert min(positions) < len(everything) / 10


# --------------------------------------------------------------------------- slices cached in memory
def _elements(ds):
    """The dataset's slices, one dict of NumPy values each, in order."""
    return [{k: v[i] for k, v in b.items()} for b in ({k: v.numpy() for k, v in batch.items()} for batch in ds)
            for i in range(len(b["image"]))]


@pytest.mark.parametrize("size", [None, 32])
def test_cached_dataset_gives_the_records_elements(builtin, size):
    out, m = builtin
    ids = m.patients_of("val") + m.patients_of("test")[:1]
    streamed = data.make_dataset(out, ids, batch_size=3, image_size=size)
    cached = data.make_dataset(out, ids, batch_size=3, image_size=size, cache=True)
    assert cached.element_spec == streamed.element_spec  # dtypes, static shapes, the partial batch's None
    assert [len(b["image"]) for b in cached] == [len(b["image"]) for b in streamed]  # the same batches
    expected, got = _elements(streamed), _elements(cached)
    assert len(got) == len(expected) == sum(m.patients[p].n_slices for p in ids)
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for key in e:
            np.testing.assert_array_equal(g[key], e[key], err_msg=key)
    assert got[0]["image"].shape == ((size or 256), (size or 256), 1)
    dropped = data.make_dataset(out, ids, batch_size=3, image_size=size, drop_remainder=True, cache=True)
    assert [len(b["image"]) for b in dropped] == [3] * (len(expected) // 3)


def test_cached_shuffle_draws_the_records_orders(builtin):
    # The same tf.data shuffle (buffer = every slice, the seed) over slice indices instead of records:
    # the same permutation in every epoch. (Keras's fit still draws other ones from the second epoch on,
    # since it makes an extra iterator at the end of each epoch of a dataset whose length is known.)
    out, m = builtin
    ids = m.patients_of("train")[:3]

    def orders(cache, seed):
        ds = data.make_dataset(out, ids, batch_size=4, shuffle=True, seed=seed, image_size=32, cache=cache)
        return [[(e["patient_id"], int(e["slice_index"]), float(e["image"].sum())) for e in _elements(ds)]
                for _ in range(3)]

    tf.keras.utils.set_random_seed(0)
    streamed = orders(False, 5)
    tf.keras.utils.set_random_seed(0)
    assert orders(True, 5) == streamed


def test_load_slices_holds_masks_as_bytes(builtin):
    out, m = builtin
    pid = m.patients_of("test")[0]
    slices = data.load_slices(out, [pid], image_size=32)
    n = m.patients[pid].n_slices
    assert {k: v.shape[0] for k, v in slices.items()} == {k: n for k in slices}
    assert slices["image"].dtype == np.float32 and slices["image"].shape == (n, 32, 32, 1)
    assert slices["mask"].dtype == slices["mask2"].dtype == slices["zones"].dtype == np.uint8
    assert set(np.unique(slices["mask"])) == {0, 1} and set(np.unique(slices["zones"])) == {0, 1, 2}
    np.testing.assert_array_equal(slices["slice_index"], np.arange(n))
    np.testing.assert_allclose(slices["spacing"], [[3.0, 4.0, 4.0]] * n)  # 0.5 mm x 256 / 32
    used = sum(v.nbytes for k, v in slices.items() if k in ("image", "mask", "mask2", "zones"))
    assert data.cache_bytes(n, 32) == used == n * 32 * 32 * (4 + 1 + 1 + 1)


def test_cache_only_under_the_limit(builtin, monkeypatch):
    out, m = builtin
    ids = m.patients_of("test")
    n = sum(m.patients[p].n_slices for p in ids)
    loaded = []
    real = data.load_slices
    monkeypatch.setattr(data, "load_slices", lambda *a, **k: loaded.append(k["image_size"]) or real(*a, **k))
    monkeypatch.setattr(data, "CACHE_LIMIT_BYTES", data.cache_bytes(n, 32))
    data.make_dataset(out, ids, image_size=32, cache=True)
    assert loaded == [32]
    data.make_dataset(out, ids, image_size=64, cache=True)  # four times the limit: streamed
    data.make_dataset(out, ids, image_size=32)  # not asked to cache
    assert loaded == [32]


def test_slices_dataset_refuses_bad_slices():
    good = {"image": np.zeros((3, 4, 4, 1), np.float32), "mask": np.zeros((3, 4, 4, 1), np.uint8),
            "mask2": np.zeros((3, 4, 4, 1), np.uint8)}
    assert [len(b["image"]) for b in data.slices_dataset(good, batch_size=2)] == [2, 1]
    with pytest.raises(ValueError, match=r"missing \['mask2'\]"):
        data.slices_dataset({k: v for k, v in good.items() if k != "mask2"})
    with pytest.raises(ValueError, match="same number"):
        data.slices_dataset({**good, "mask": good["mask"][:2]})
    with pytest.raises(ValueError, match="same number"):
        data.slices_dataset({k: v[:0] for k, v in good.items()})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.slices_dataset(good, batch_size=0)


def test_reader_errors(builtin, tmp_path):
    out, _ = builtin
    with pytest.raises(ValueError, match="'nobody' is not prepared"):
        data.make_dataset(out, ["nobody"])
    with pytest.raises(ValueError, match="no labelled patients"):
        data.make_dataset(out, [])
    with pytest.raises(FileNotFoundError, match="no manifest"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"patients": {}}))
    with pytest.raises(ValueError, match="missing key 'split'"):
        Manifest.read(tmp_path)
