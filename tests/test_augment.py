"""Augmentation: each preset changes training batches only (in the model's training step), keeps shape
and range, is seeded, and stays out of the network that is saved; MixUp/CutMix in tf.data; the
`python -m fer_keras.data.augment preview` grid."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fer_keras.data.augment import (
    PRESETS, Augmentation, Augmented, CoarseDropout, RandomApply, RandomGaussianNoise, augmented, build_mixer,
    main, network_of, save_augment_grid,
)
from fer_keras.data.pipeline import make_dataset
from fer_keras.data.synthetic import write_synthetic_csv
from fer_keras.errors import FerError
from fer_keras.models.common import image_input, logits

BATCH = 16


@pytest.fixture
def batch():
    """Float 0..255 images, many pixels at the extremes (range clipping matters), one-hot labels."""
    rng = np.random.default_rng(1)
    images = rng.choice([0.0, 40.0, 128.0, 215.0, 255.0], size=(BATCH, 48, 48, 1)).astype("float32")
    labels = np.eye(7, dtype="float32")[np.arange(BATCH) % 7]
    return images, labels


def augment(preset, images, where="eager", seed=0):
    """A training pass of preset `preset`'s Augmentation, eagerly or traced (as in a training step)."""
    layer = Augmentation(preset, seed=seed)
    run = (lambda x: layer(x, training=True)) if where == "eager" else tf.function(lambda x: layer(x, training=True))
    return np.asarray(run(images))


def mix(mixer, images, labels, where):
    """Run `mixer` eagerly or inside `tf.data.Dataset.map`, where training runs it; return numpy arrays."""
    out = mixer(images, labels) if where == "eager" else next(iter(tf.data.Dataset.from_tensors((images, labels)).map(mixer)))
    return tuple(np.asarray(t) for t in out)


def small_network():
    """A network without Dropout or BatchNorm, so any training-mode difference is the augmentation."""
    inputs, x = image_input()
    return keras.Model(inputs, logits(keras.layers.Flatten()(x)), name="small")


def test_presets_and_nothing_to_do():
    network = small_network()
    assert "none" in PRESETS and augmented(network, "none") is network and network_of(network) is network
    assert all(isinstance(augmented(network, p), Augmented) for p in PRESETS if p != "none")
    assert build_mixer() is None and build_mixer(0.0, 0.0) is None and build_mixer(0.2) is not None
    with pytest.raises(FerError, match="unknown augmentation preset 'heavy'"):
        augmented(network, "heavy")
    with pytest.raises(FerError, match="cutmix alpha in"):
        build_mixer(cutmix=2.0)


@pytest.mark.parametrize("preset", ["strong", "albumentations_002"])
def test_stays_float32_under_mixed_precision(batch, preset):
    """The trainer sets mixed_bfloat16 globally; augmentation and mixing still compute in float32."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer, mixer = Augmentation(preset, seed=0), build_mixer(0.2, 0.5, seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.asarray(layer(batch[0], training=True)).dtype == np.float32
    assert all(t.dtype == np.float32 for t in mix(mixer, *batch, where="map"))


@pytest.mark.parametrize("where", ["eager", "traced"])
@pytest.mark.parametrize("preset", ["light", "strong"])
def test_preset_changes_images_keeps_shape_and_range(batch, preset, where):
    images = batch[0]
    out = augment(preset, images, where)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    changed = np.abs(out - images).reshape(BATCH, -1).max(axis=1) > 1.0
    assert changed.mean() > 0.8


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_every_preset_keeps_shape_and_range_and_is_the_identity_outside_training(batch, preset):
    images = batch[0]
    out = augment(preset, images, "traced")
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert (np.abs(out - images).reshape(BATCH, -1).max(axis=1) > 1.0).any()
    layer = Augmentation(preset, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(images)), images)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)


def test_rotation_preset_only_rotates():
    """No flip (a left-to-right ramp stays one) and no colour change (a flat face stays flat)."""
    ramp = np.broadcast_to(np.linspace(0, 255, 48, dtype="float32")[None, None, :, None], (64, 48, 48, 1))
    flat = np.full((64, 48, 48, 1), 100.0, "float32")
    rotated = augment("rotation", ramp)
    assert not np.allclose(rotated, ramp)
    assert (rotated[:, :, :24].mean(axis=(1, 2, 3)) < rotated[:, :, 24:].mean(axis=(1, 2, 3))).all()
    np.testing.assert_allclose(augment("rotation", flat), flat, atol=1e-3)


def test_the_augmented_model_augments_in_training_steps_only(batch):
    """`fit` trains network and augmentation together; prediction, evaluation and `network_of` see no
    augmentation, and the weights trained are the network's."""
    images, labels = batch
    keras.utils.set_random_seed(0)
    network = small_network()
    model = augmented(network, "flip_rotation", seed=0)
    assert network_of(model) is network and model.name == network.name
    np.testing.assert_allclose(model.predict(images, verbose=0), network.predict(images, verbose=0), rtol=1e-6)
    assert not np.allclose(np.asarray(model(images, training=True)), np.asarray(network(images, training=True)))
    model.compile(keras.optimizers.SGD(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in network.get_weights()]
    model.fit(images, labels, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, network.get_weights()))
    assert [v.path for v in model.trainable_variables] == [v.path for v in network.trainable_variables]


@pytest.mark.parametrize("where", ["eager", "traced"])
def test_random_apply_changes_whole_images_with_its_probability(where):
    images = np.zeros((2000, 4, 4, 1), "float32")
    layer = RandomApply(keras.layers.Rescaling(1.0, offset=1.0), 0.3, seed=0)
    out = np.asarray(layer(images) if where == "eager" else next(iter(tf.data.Dataset.from_tensors(images).map(layer))))
    applied = out.reshape(2000, -1)
    assert set(np.unique(applied.min(axis=1) + applied.max(axis=1))) <= {0.0, 2.0}  # all pixels or none
    assert abs(applied.max(axis=1).mean() - 0.3) < 0.05


def test_gaussian_noise_variance_is_drawn_per_image():
    out = np.asarray(RandomGaussianNoise((10.0, 50.0), seed=0)(np.full((400, 48, 48, 1), 128.0, "float32")))
    std = out.reshape(400, -1).std(axis=1)
    assert np.sqrt(10) * 0.9 < std.min() < np.sqrt(15) and np.sqrt(45) < std.max() < np.sqrt(50) * 1.1


def test_coarse_dropout_fills_square_holes():
    white = np.full((50, 48, 48, 1), 255.0, "float32")
    one = np.asarray(CoarseDropout(1, 8, seed=0)(white))[..., 0]
    for hole in one == 0:
        rows, cols = np.nonzero(hole)
        assert hole.sum() == 64 and np.ptp(rows) == 7 and np.ptp(cols) == 7
    holes = (np.asarray(CoarseDropout(8, 8, seed=0)(white)) == 0).reshape(50, -1).sum(axis=1)
    assert 64 <= holes.min() and holes.max() <= 8 * 64 and holes.mean() > 6 * 64  # overlaps allowed


def test_albumentations_002_applies_each_stage_with_its_probability():
    """On flat faces: noise (p 0.3), black holes (p 0.3) and a brightness shift (p 0.5) show apart."""
    flat = np.full((1000, 48, 48, 1), 128.0, "float32")
    out = augment("albumentations_002", flat).reshape(1000, -1)
    holes = (out == 0).any(axis=1)
    kept = [row[row > 0] for row in out]
    noisy = np.array([row.std() > 1 for row in kept])
    shifted = np.array([abs(np.median(row) - 128) > 1 for row in kept])
    for drawn, p in ((holes, 0.3), (noisy, 0.3), (shifted, 0.5)):
        assert abs(drawn.mean() - p) < 0.06


@pytest.mark.parametrize("layer", [
    RandomApply(keras.layers.RandomFlip("horizontal", seed=1), 0.5, seed=2),
    RandomGaussianNoise((10.0, 50.0), seed=3),
    CoarseDropout(8, 8, fill_value=0.0, seed=4),
    Augmentation("albumentations_002", seed=5),
], ids=lambda layer: type(layer).__name__)
def test_augmentation_layers_config_round_trips(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    assert keras.saving.get_registered_object(f"fer_keras>{type(layer).__name__}") is type(layer)


@pytest.mark.parametrize("where", ["eager", "traced"])
def test_same_seed_same_draws(batch, where):
    np.testing.assert_array_equal(augment("strong", batch[0], where, seed=3), augment("strong", batch[0], where, seed=3))


@pytest.mark.parametrize("where", ["eager", "map"])
def test_same_mixer_seed_same_draws(batch, where):
    first, again = (mix(build_mixer(0.2, 0.5, seed=3), *batch, where) for _ in range(2))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_other_seed_other_draws(batch):
    images, labels = batch
    assert not np.allclose(augment("strong", images, seed=3), augment("strong", images, seed=4))
    first, other = build_mixer(0.2, seed=3)(images, labels), build_mixer(0.2, seed=4)(images, labels)
    assert not np.allclose(first[0], other[0]) and not np.allclose(first[1], other[1])


def test_successive_batches_get_new_draws(batch):
    layer = Augmentation("light", seed=0)
    assert not np.allclose(layer(batch[0], training=True), layer(batch[0], training=True))


@pytest.mark.parametrize("where", ["eager", "map"])
@pytest.mark.parametrize("alphas", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 0.5}])
def test_mixing_gives_soft_labels_summing_to_one(batch, alphas, where):
    images, labels = batch
    out_images, out_labels = mix(build_mixer(**alphas, seed=0), images, labels, where)
    assert out_images.shape == images.shape
    assert out_images.min() >= 0.0 and out_images.max() <= 255.0
    assert out_labels.shape == labels.shape and out_labels.dtype == np.float32
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-5)
    assert out_labels.min() >= 0.0
    assert (out_labels.max(axis=1) < 0.999).sum() >= BATCH // 2  # most rows really mixed


def test_eval_pipeline_never_mixes():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (20, 48, 48, 1), dtype=np.uint8)
    labels = np.arange(20) % 7
    mixer = build_mixer(0.2, seed=0)
    x, y = next(iter(make_dataset(images, labels, batch_size=20, mix=mixer)))
    np.testing.assert_array_equal(x.numpy(), images.astype("float32"))
    np.testing.assert_array_equal(y.numpy(), np.eye(7)[labels])
    x_train, y_train = next(iter(make_dataset(images, labels, batch_size=20, training=True, mix=mixer)))
    assert not np.allclose(np.sort(x_train.numpy(), axis=None), np.sort(images, axis=None))
    assert (y_train.numpy().max(axis=1) < 0.999).any()


def test_save_augment_grid_writes_png(batch, tmp_path):
    path = tmp_path / "plots" / "augment_strong.png"
    save_augment_grid(batch[0][:3], "light", path, seed=0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary left behind


def test_preview_cli_draws_a_preset_on_sample_faces(tmp_path, capsys):
    data = tmp_path / "faces.csv"
    write_synthetic_csv(data, n=40, seed=0)
    grids = {}
    for name, n, seed in [("a", 3, 1), ("again", 3, 1), ("other_seed", 3, 2), ("more", 5, 1)]:
        grids[name] = tmp_path / f"{name}.png"
        assert main(["preview", "--preset", "strong", "--data", str(data), "--n", str(n), "--seed", str(seed),
                     "--out", str(grids[name])]) == 0
    assert f"preset strong drawn on 3 faces: {grids['a']}" in capsys.readouterr().out
    assert grids["a"].read_bytes() == grids["again"].read_bytes()
    assert grids["a"].read_bytes() != grids["other_seed"].read_bytes()
    with Image.open(grids["a"]) as three, Image.open(grids["more"]) as five:
        assert three.format == "PNG" and three.width == five.width and five.height - three.height == 200  # a row each
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["faces.csv", *(f"{n}.png" for n in grids)])


def test_preview_cli_defaults_to_the_synthetic_data(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["preview", "--preset", "light", "--n", "2", "--out", str(out)]) == 0
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.size == (600, 230)
