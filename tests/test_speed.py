"""The fast training path: FusedBatchNormalization computes what Keras' BatchNormalization does, and the
run record's speed settings and images per second (no timings: those are benchmarks/bench_train.py's)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.models import build_model
from fer_keras.models.layers import FusedBatchNormalization
from fer_keras.training.speed import images_per_second, speed_settings


def _train_step(fused, policy, x, weights, fused_dtype=None):
    """Output, gradients (input, gamma, beta) and moving statistics of one training call."""
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    layer = FusedBatchNormalization(fused=fused, fused_dtype=fused_dtype, gamma_initializer="random_normal",
                                    beta_initializer="random_normal")
    layer.build(x.shape)
    assert layer.uses_fused_kernel(x) is (fused is None)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(tf.cast(x, layer.compute_dtype), training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") ** 2 * weights)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(tf.cast(t, "float32")) for t in (y, *grads, layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("policy, fused_dtype", [("float32", None), ("mixed_bfloat16", None),
                                                 ("mixed_bfloat16", "float32")])
def test_fused_batchnorm_matches_keras(policy, fused_dtype):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3, 2, (16, 6, 6, 5)).astype("float32"))
    weights = tf.constant(rng.normal(size=x.shape).astype("float32"))
    fused, plain = _train_step(None, policy, x, weights, fused_dtype), _train_step(False, policy, x, weights)
    for name, a, b in zip(["output", "d_input", "d_gamma", "d_beta", "moving_mean", "moving_variance"], fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_fused_kernel_only_where_it_applies():
    layer = FusedBatchNormalization()
    images, vectors = tf.zeros((2, 4, 4, 3)), tf.zeros((2, 3))
    assert layer.uses_fused_kernel(images)
    assert not layer.uses_fused_kernel(images, training=False)  # inference: Keras' affine op, as exported
    assert not layer.uses_fused_kernel(vectors)  # after a dense layer
    assert not FusedBatchNormalization(axis=1).uses_fused_kernel(images)
    assert not FusedBatchNormalization(epsilon=1e-6).uses_fused_kernel(images)  # below the kernel's minimum


def test_fused_setting_survives_saving(tmp_path):
    model = build_model("deep_cnn", widths=[4, 8])
    model.get_layer("block1_bn1").fused = False
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("block1_bn2"), FusedBatchNormalization)
    assert loaded.get_layer("block1_bn1").fused is False and loaded.get_layer("block1_bn2").fused is None
    xception = build_model("mini_xception")
    xception.save(tmp_path / "x.keras")
    layers = [l for l in keras.saving.load_model(tmp_path / "x.keras").layers if isinstance(l, FusedBatchNormalization)]
    assert layers and {layer.fused_dtype for layer in layers} == {"float32"}  # its faster bf16 training path


def test_speed_settings_say_what_training_uses():
    model = build_model("deep_cnn", widths=[4, 8])
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    settings = speed_settings(keras.Sequential([model]))  # found inside a wrapping model too
    assert settings == {"backend": "tensorflow", "fused_batchnorm": True, "jit_compile": False,
                        "steps_per_execution": 1}
    model.get_layer("block2_bn1").fused = False
    assert speed_settings(model)["fused_batchnorm"] is False


def test_images_per_second_over_epochs():
    rows = [{"epoch_time": "2.0"}, {"epoch_time": "3.0"}]
    assert images_per_second(1000, rows) == 400.0
    assert images_per_second(1000, []) is None
