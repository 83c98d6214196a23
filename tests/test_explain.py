"""Grad-CAM: every convolutional architecture of the zoo, a localisation check, the CLI and its errors."""

import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras.data.synthetic import write_synthetic_csv
from fer_keras.errors import FerError
from fer_keras.evaluation.explain import attention_gates, grad_cam, main, target_layer
from fer_keras.models import build_model, list_models
from fer_keras.models.common import image_input, logits

NOT_CONVOLUTIONAL = {"mlp", "vit", "p002_vit"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_grad_cam_for_every_architecture(name):
    model = build_model(name)
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype(np.uint8)
    if name in NOT_CONVOLUTIONAL:
        with pytest.raises(FerError, match=f"model {name} has no convolutional layer"):
            grad_cam(model, faces)
        return
    assert len(model.get_layer(target_layer(model)).output.shape) == 4
    heatmaps, probs = grad_cam(model, faces)
    assert heatmaps.shape == (2, 48, 48)
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_grad_cam_highlights_the_evidence(precision):
    """A model whose only evidence is bright pixels: the heat map must sit on the bright square, also
    when the feature map is bfloat16 (mixed precision)."""
    keras.config.set_dtype_policy(precision)
    try:
        inputs, x = image_input()
        x = keras.layers.Conv2D(1, 1, activation="relu", kernel_initializer="ones", name="features")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, logits(x))
    finally:
        keras.config.set_dtype_policy("float32")
    model.get_layer("logits").set_weights([np.eye(1, 7, dtype="float32"), np.zeros(7, "float32")])
    face = np.zeros((1, 48, 48, 1), np.uint8)
    face[0, 8:20, 28:40] = 255
    heatmaps, probs = grad_cam(model, face)
    assert probs[0].argmax() == 0
    assert heatmaps[0, 8:20, 28:40].min() > 0.9
    outside = np.ones((48, 48), bool)
    outside[6:22, 26:42] = False
    assert heatmaps[0][outside].max() < 0.05


def test_target_layer_choice_and_errors():
    model = build_model("cbam_cnn")
    assert target_layer(model) == "block3_spatial_attention"
    assert target_layer(model, "block1_conv1") == "block1_conv1"
    with pytest.raises(FerError, match="choose one of"):
        target_layer(model, "avg_pool")


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "faces.csv"
    write_synthetic_csv(path, n=60, seed=0)
    return path


def test_cli_writes_grad_cam_grid(data_csv, tmp_path, capsys):
    build_model("tiny_cnn").save(tmp_path / "model.keras")
    out = tmp_path / "grid.png"
    assert main(["--model", str(tmp_path), "--data", str(data_csv), "--n", "5", "--out", str(out),
                 "--split", "Training", "--seed", "3"]) == 0
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.width > 300 and grid.height > 300
    assert "block1_relu1" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary file left behind"


def test_cli_says_clearly_when_there_is_no_convolution(data_csv, tmp_path, capsys):
    build_model("mlp").save(tmp_path / "mlp.keras")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "mlp.keras"), "--data", str(data_csv), "--out", str(tmp_path / "g.png")])
    assert exit_info.value.code == 2
    assert "error: model mlp has no convolutional layer" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("name, sizes", [("cbam_cnn", [48, 24, 12]), ("p004_cbam_cnn", [24, 12, 6])])
def test_attention_gates_are_the_maps_cbam_multiplies_by(name, sizes):
    model = build_model(name)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    gates = attention_gates(model, faces)
    assert list(gates) == [f"block{i}_spatial_attention" for i in (1, 2, 3)]
    for (layer_name, gate), size in zip(gates.items(), sizes):
        layer = model.get_layer(layer_name)
        features = keras.Model(model.inputs, layer.input)([faces])
        refined = np.asarray(keras.Model(model.inputs, layer.output)([faces]))
        raw = np.asarray(layer.gate(features))
        assert raw.shape == (3, size, size, 1) and gate.shape == (3, 48, 48)
        np.testing.assert_allclose(refined, np.asarray(features) * raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gate[:, :: 48 // size, :: 48 // size], raw[..., 0], rtol=1e-6)
        assert 0 < gate.min() and gate.max() < 1


def test_cli_draws_cbam_gates_beside_grad_cam(data_csv, tmp_path, capsys):
    keras.config.set_dtype_policy("mixed_bfloat16")  # as studies train it on a bf16 CPU
    try:
        build_model("p004_cbam_cnn").save(tmp_path / "cbam.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    out = tmp_path / "gates.png"
    assert main(["--model", str(tmp_path / "cbam.keras"), "--data", str(data_csv), "--n", "3", "--out", str(out),
                 "--attention"]) == 0
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.width >= 5 * 190 and grid.height >= 3 * 200  # 5 panels, 3 faces
    assert "the gates of block1_spatial_attention, block2_spatial_attention" in capsys.readouterr().out
    build_model("tiny_cnn").save(tmp_path / "tiny.keras")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "tiny.keras"), "--data", str(data_csv), "--out", str(tmp_path / "t.png"),
              "--attention"])
    assert exit_info.value.code == 2 and "has no CBAM spatial-attention layer" in capsys.readouterr().err
