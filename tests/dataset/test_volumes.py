"""tfrobseg.dataset.volumes: volumes from the prepared records, padding, random patches, whole-volume datasets and
sliding-window inference."""

import keras
import numpy as np
import pytest

from tfrobseg.dataset import pipeline as data
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.volumes import (
    Volume,
    load_volumes,
    pad_to_multiple,
    patch_dataset,
    sliding_window_predict,
    volume_dataset,
    window_starts,
)
from tfrobseg.errors import RecordError


def _volume(pid="V", shape=(6, 12, 10), seed=0, foreground=((2, 5, 4),)) -> Volume:
    """A small volume: noise image, a mask of the given foreground voxels, zones 1 there and 2 next to them."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((*shape, 1), np.float32)
    zones = np.zeros((*shape, 1), np.float32)
    for z, y, x in foreground:
        mask[z, y, x] = 1
        zones[z, y, x] = 1
        zones[z, y, x + 1] = 2
        mask[z, y, x + 1] = 1
    return Volume(pid, rng.normal(size=(*shape, 1)).astype(np.float32), mask, np.zeros_like(mask), zones,
                  np.array([3.0, 0.5, 0.5]), has_zones=True)


# --------------------------------------------------------------------------- volumes from the records
def test_volumes_are_the_stacked_slices(tiny_cohort):
    m = Manifest.read(tiny_cohort)
    ids = m.patients_of("train")[:2][::-1]
    volumes = load_volumes(tiny_cohort, ids, image_size=32)
    assert [v.patient_id for v in volumes] == ids and all(isinstance(v.patient_id, str) for v in volumes)
    for v in volumes:
        slices = data.load_slices(tiny_cohort, [v.patient_id], image_size=32)
        n = m.patients[v.patient_id].n_slices
        assert v.shape == (n, 32, 32) and v.image.dtype == v.zones.dtype == np.float32
        for key in ("image", "mask", "mask2", "zones"):
            np.testing.assert_array_equal(getattr(v, key), slices[key].astype(np.float32), err_msg=key)
        np.testing.assert_allclose(v.spacing, [3.0, 4.0, 4.0])  # the 2D path's spacing at 32 px
        assert v.has_mask2 and v.has_zones
        y = v.target("zones")
        assert y.shape == (n, 32, 32, 3) and np.all(y.sum(-1) == 1)
        np.testing.assert_array_equal(y.argmax(-1), v.zones[..., 0])
    with pytest.raises(ValueError, match="more than once"):
        load_volumes(tiny_cohort, ids + ids[:1])
    with pytest.raises(TypeError, match="not a string"):
        load_volumes(tiny_cohort, ids[0])


def test_a_record_shorter_than_its_manifest_is_refused(tiny_cohort, monkeypatch):
    pid = Manifest.read(tiny_cohort).patients_of("val")[0]
    real = Manifest.read

    def one_slice_more(data_dir):
        m = real(data_dir)
        m.patients[pid].n_slices += 1
        return m

    monkeypatch.setattr(Manifest, "read", staticmethod(one_slice_more))
    with pytest.raises(RecordError, match=f"{pid}: .*{pid}.tfrecord: .* slice\\(s\\) read"):
        load_volumes(tiny_cohort, [pid], image_size=16)


# --------------------------------------------------------------------------- padding
def test_pad_to_multiple_pads_after_the_end():
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    padded, crop = pad_to_multiple(array, (4, 3, 8), value=-1.0)
    assert padded.shape == (8, 6, 8)
    np.testing.assert_array_equal(padded[crop], array)
    assert (padded[5:] == -1).all() and (padded[:, :, 7:] == -1).all()
    same, crop = pad_to_multiple(array[..., None], 1)
    assert same.shape == (5, 6, 7, 1) and crop == (slice(0, 5), slice(0, 6), slice(0, 7))
    with pytest.raises(ValueError, match="multiple must be"):
        pad_to_multiple(array, (4, 0, 8))
    with pytest.raises(ValueError, match="array must be"):
        pad_to_multiple(array[0], 4)


# --------------------------------------------------------------------------- random patches
def _epoch(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def test_patches_are_seeded_and_new_each_epoch():
    volumes = [_volume("A", seed=1), _volume("B", shape=(7, 12, 10), seed=2)]
    ds = patch_dataset(volumes, (4, 6, 6), batch_size=3, seed=5, samples_per_volume=4)
    first, second = _epoch(ds), _epoch(ds)
    assert first[0].shape == (8, 4, 6, 6, 1) and first[1].shape == (8, 4, 6, 6, 1) and ds.cardinality() == 3
    again = patch_dataset(volumes, (4, 6, 6), batch_size=3, seed=5, samples_per_volume=4)
    np.testing.assert_array_equal(_epoch(again)[0], first[0])  # the same seed: the same first epoch
    np.testing.assert_array_equal(_epoch(again)[0], second[0])  # and the same second one
    assert not np.array_equal(first[0], second[0])
    other = patch_dataset(volumes, (4, 6, 6), batch_size=3, seed=6, samples_per_volume=4)
    assert not np.array_equal(_epoch(other)[0], first[0])


def _locate(patch: np.ndarray, image: np.ndarray) -> tuple[int, int, int]:
    """Where a patch was cut from (the image is noise: one exact match)."""
    d, h, w = patch.shape[:3]
    hits = [(z, y, x) for z in range(image.shape[0] - d + 1) for y in range(image.shape[1] - h + 1)
            for x in range(image.shape[2] - w + 1) if np.array_equal(image[z:z + d, y:y + h, x:x + w], patch)]
    assert len(hits) == 1
    return hits[0]


def test_a_share_of_patches_is_centred_on_the_foreground():
    volume = _volume(shape=(8, 16, 16), foreground=((1, 2, 12),))  # one foreground pair near a corner
    patch = (4, 6, 6)

    def contains_foreground(fraction, epochs=5):
        ds = patch_dataset([volume], patch, batch_size=8, seed=0, samples_per_volume=8, foreground_fraction=fraction)
        return [[bool(y.any()) for y in _epoch(ds)[1]] for _ in range(epochs)]

    assert all(all(epoch) for epoch in contains_foreground(1.0))
    assert all(sum(epoch) >= 4 for epoch in contains_foreground(0.5))
    # Uniform patches: every one lies inside the volume, and most miss this small foreground.
    uniform = patch_dataset([volume], patch, batch_size=8, seed=0, samples_per_volume=8, foreground_fraction=0.0)
    x, y = _epoch(uniform)
    starts = [_locate(p, volume.image) for p in x]
    assert sum(bool(t.any()) for t in y) < 4 and len(set(starts)) > 4
    # A patch centred on a foreground voxel and moved inside the volume: its y is the volume's y there.
    x, y = _epoch(patch_dataset([volume], patch, batch_size=8, seed=0, samples_per_volume=8, foreground_fraction=1.0))
    for p, t in zip(x, y):
        z0, y0, x0 = _locate(p, volume.image)
        np.testing.assert_array_equal(t, volume.mask[z0:z0 + 4, y0:y0 + 6, x0:x0 + 6])


def test_zone_patches_are_one_hot_and_padded_as_background():
    small = _volume(shape=(3, 5, 5), foreground=((1, 2, 2),))  # smaller than the patch: padded
    ds = patch_dataset([small], (4, 8, 8), batch_size=2, seed=0, samples_per_volume=2, target="zones")
    x, y = _epoch(ds)
    assert x.shape == (2, 4, 8, 8, 1) and y.shape == (2, 4, 8, 8, 3)
    assert np.all(y.sum(-1) == 1) and (x[:, 3:] == 0).all() and (y[:, 3:, ..., 0] == 1).all()
    np.testing.assert_array_equal(y[0, :3, :5, :5].argmax(-1), small.zones[..., 0])


@pytest.mark.parametrize("kwargs, message", [
    ({"patch_shape": (4, 0, 4)}, "patch_shape"), ({"batch_size": 0}, "batch_size"),
    ({"samples_per_volume": 0}, "samples_per_volume"), ({"foreground_fraction": 1.5}, "foreground_fraction"),
    ({"target": "tz"}, "target must be one of"), ({"seed": None}, "seed must be an int"),
])
def test_bad_patch_options(kwargs, message):
    options = {"patch_shape": 4, "batch_size": 2, "seed": 0, "samples_per_volume": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        patch_dataset([_volume()], options.pop("patch_shape"), **options)
    with pytest.raises(ValueError, match="non-empty list"):
        patch_dataset([], 4, batch_size=1, seed=0, samples_per_volume=1)


# --------------------------------------------------------------------------- whole volumes
def test_volume_dataset_elements():
    volumes = [_volume("A"), _volume("B", shape=(5, 12, 10))]
    elements = list(volume_dataset(volumes, target="zones", multiple=4))
    assert [e["patient_id"].numpy()[0].decode() for e in elements] == ["A", "B"]
    for e, v in zip(elements, volumes):
        assert e["image"].shape == (1, 8, 12, 12, 1) and e["mask"].shape == (1, 8, 12, 12, 3)
        d, h, w = e["shape"].numpy()[0]
        assert (d, h, w) == v.shape
        np.testing.assert_array_equal(e["image"].numpy()[0, :d, :h, :w], v.image)
        assert (e["image"].numpy()[0, d:] == 0).all()
        np.testing.assert_array_equal(e["mask"].numpy()[0].argmax(-1)[:d, :h, :w], v.zones[..., 0])
        assert np.all(e["mask"].numpy().sum(-1) == 1)  # the padding is background
        np.testing.assert_allclose(e["spacing"].numpy(), [[3.0, 0.5, 0.5]])
    spec = volume_dataset(volumes).element_spec
    assert spec["image"].shape.as_list() == [1, None, 12, 10, 1] and spec["mask"].shape[-1] == 1


# --------------------------------------------------------------------------- sliding-window inference
def test_window_starts_cover_the_axis_with_the_overlap():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(9, 4, 0.5) == [0, 2, 3, 5]  # 4 windows, evenly spread: 5/3 apart
    assert window_starts(4, 4, 0.5) == [0] and window_starts(3, 4, 0.5) == [0]
    assert window_starts(12, 4, 0.0) == [0, 4, 8]


def _net(kernel: int, channels: int = 2) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, None, 1))
    h = keras.layers.Conv3D(3, kernel, padding="same", activation="tanh")(inp)
    return keras.Model(inp, keras.layers.Conv3D(channels, 1, activation="softmax")(h))


@pytest.mark.parametrize("weighting", ["gaussian", "uniform"])
def test_sliding_window_equals_whole_volume_inference_where_it_fits(weighting):
    image = _volume(shape=(8, 16, 16)).image
    model = _net(3)
    whole = model(image[None], training=False).numpy()[0]
    np.testing.assert_array_equal(sliding_window_predict(model, image, (8, 16, 16), weighting=weighting), whole)
    # A pointwise network sees no context: any windows give the whole-volume prediction.
    pointwise = _net(1)
    expected = pointwise(image[None], training=False).numpy()[0]
    for patch, overlap in (((4, 8, 8), 0.5), ((3, 5, 7), 0.25), ((8, 16, 16), 0.5), ((10, 20, 20), 0.5)):
        got = sliding_window_predict(pointwise, image, patch, overlap=overlap, batch_size=3, weighting=weighting)
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=str(patch))


def test_sliding_window_is_close_to_whole_volume_inference_otherwise():
    image = _volume(shape=(12, 24, 24), seed=3).image
    model = _net(3)
    whole = model(image[None], training=False).numpy()[0]
    errors = {w: np.abs(sliding_window_predict(model, image, (8, 16, 16), weighting=w) - whole)
              for w in ("gaussian", "uniform")}
    # Voxels next to a window's inner edge (where the window's convolution saw zero padding) differ: with the
    # plain mean by up to half the edge error (measured 0.18, mean 0.010); the Gaussian weights give such
    # edge predictions almost no weight where another window covers the voxel (measured max 7e-4).
    assert errors["uniform"].max() < 0.25 and errors["uniform"].mean() < 0.02
    assert errors["gaussian"].max() < 5e-3 and errors["gaussian"].mean() < 1e-4
    assert errors["gaussian"].max() < errors["uniform"].max() / 10


def test_sliding_window_checks_its_options():
    image = np.zeros((4, 4, 4, 1), np.float32)
    model = _net(1)
    with pytest.raises(ValueError, match="overlap must be in"):
        sliding_window_predict(model, image, 4, overlap=1.0)
    with pytest.raises(ValueError, match="weighting must be one of"):
        sliding_window_predict(model, image, 4, weighting="mean")
    with pytest.raises(ValueError, match="one volume"):
        sliding_window_predict(model, image[0], 4)
