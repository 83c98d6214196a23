"""Architecture zoo: every registered model builds, trains, saves and has the size docs/models.md states,
and runs the same on the JAX backend."""

import subprocess
import sys

import numpy as np
import pytest

import keras

from fer_keras.constants import IMAGE_SHAPE, NUM_CLASSES
from fer_keras.models import build_model, default_hparams, list_models
from fer_keras.models import layers as fer_layers
from fer_keras.models.__main__ import main
from fer_keras.models.profile import count_macs, count_trainable

# Expected parameter count (low, high) of each architecture with its defaults (docs/models.md lists the counts).
PARAM_RANGES = {
    "mlp": (1.2e6, 1.4e6),
    "tiny_cnn": (50e3, 70e3),
    "simple_cnn": (1.1e6, 1.3e6),
    "baseline_cnn": (1.1e6, 1.3e6),
    "cnn3": (1.1e6, 1.4e6),
    "improved_cnn": (10e6, 12e6),
    "vgg_large": (4.9e6, 5.1e6),
    "regularized_cnn": (1.5e6, 2e6),
    "deep_cnn": (1e6, 1.3e6),
    "deep_cnn_v2": (0.8e6, 1e6),
    "globalpool_cnn": (1.1e6, 1.4e6),
    "hybrid_cnn": (1.2e6, 1.5e6),
    "resnet_fer": (0.6e6, 0.9e6),
    "resnet_fer_wide": (2.7e6, 2.85e6),
    "resnet_deep": (10.5e6, 11.5e6),
    "cbam_cnn": (0.25e6, 0.4e6),
    "vit": (0.1e6, 0.2e6),
    "mini_xception": (55e3, 62e3),
    "vgg_fer": (38e6, 42e6),
    # Networks of the original projects, named pNNN_<the project's name>.
    "p000_simple_cnn": (4.7e6, 4.8e6),
    "p000_deep_cnn": (1.65e6, 1.75e6),
    "p001_base_cnn": (1.2e6, 1.35e6),
    "p001_deep_cnn": (3.4e6, 3.6e6),
    "p001_dropout_cnn": (3.4e6, 3.6e6),
    "p002_basic_cnn": (1.2e6, 1.35e6),
    "p002_wide_cnn": (5e6, 5.2e6),
    "p002_vit": (1.1e6, 1.2e6),
    "p004_baseline_cnn_v2": (200e3, 300e3),
    "p004_deep_cnn_v1": (1.25e6, 1.35e6),
    "p004_cbam_cnn": (250e3, 400e3),
}

# Saving and fitting these takes several seconds each on 2 cores.
HEAVY = {"improved_cnn", "resnet_deep", "vgg_fer", "vgg_large"}
MODELS = [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name for name in list_models()]


@pytest.fixture(scope="module")
def built():
    """Default-built models, built once per module (tests that train build their own)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_model(name)
        return cache[name]

    return get


@pytest.fixture
def batch():
    """One fixed batch: 8 images with 0-255 values and one-hot labels covering 7 classes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, *IMAGE_SHAPE)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(8) % NUM_CLASSES, NUM_CLASSES)
    return images, labels


@pytest.fixture
def bfloat16_policy():
    """Global mixed_bfloat16 policy for one test, restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_registry_holds_every_required_architecture():
    required = {
        "mlp", "tiny_cnn", "simple_cnn", "baseline_cnn", "cnn3", "improved_cnn", "vgg_large", "regularized_cnn",
        "deep_cnn", "deep_cnn_v2", "globalpool_cnn", "hybrid_cnn", "resnet_fer", "resnet_fer_wide", "resnet_deep",
        "cbam_cnn", "vit", "mini_xception", "vgg_fer",
        "p000_simple_cnn", "p000_deep_cnn", "p001_base_cnn", "p001_deep_cnn", "p001_dropout_cnn", "p002_basic_cnn",
        "p002_wide_cnn", "p002_vit", "p004_baseline_cnn_v2", "p004_deep_cnn_v1", "p004_cbam_cnn",
    }
    assert required <= set(list_models())
    assert set(PARAM_RANGES) == set(list_models()), "every model needs a stated parameter range"


@pytest.mark.parametrize("name", list_models())
def test_builds_with_defaults_to_float32_logits(name, built):
    model = built(name)
    assert model.name == name
    assert model.input_shape == (None, *IMAGE_SHAPE)
    assert model.output_shape == (None, NUM_CLASSES)
    assert model.layers[-1].name == "logits"
    assert model.output.dtype == "float32"


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_inside_the_stated_range(name, built):
    low, high = PARAM_RANGES[name]
    assert low <= built(name).count_params() <= high


# The original projects' networks (fer_keras/models: pNNN_<name>, and the ones that kept their names)
# as trainable parameters: PyTorch's count, which the projects report; Keras' count_params adds two
# BatchNormalization statistics per channel. Each sum goes layer by layer through the description:
# k*k*in*out (+ out bias) per conv, 2*C per BatchNormalization (gamma, beta), in*out + out per dense.
# Convs and dense layers that BatchNormalization follows have no bias here (it cancels them): PyTorch
# counts one more parameter per channel of those.
PROJECT_TRAINABLE = {
    # Project 000 (states 4.74M, 1.70M and 2,778,311; checked below).
    "p000_simple_cnn": (9 * 32 + 32) + (9 * 32 * 64 + 64) + (12 * 12 * 64 * 512 + 512) + (512 * 7 + 7),
    "p000_deep_cnn": (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (9 * 128 * 256 + 2 * 256)
    + (3 * 3 * 256 * 512 + 512) + (512 * 256 + 256) + (256 * 7 + 7),
    "resnet_fer_wide": (7 * 7 * 64 + 2 * 64)  # stem, then 2 blocks of 2 convs, 1x1 shortcuts where the shape changes
    + 2 * 2 * (9 * 64 * 64 + 2 * 64)
    + (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128 + 3 * 2 * 128) + 2 * (9 * 128 * 128 + 2 * 128)
    + (9 * 128 * 256 + 9 * 256 * 256 + 128 * 256 + 3 * 2 * 256) + 2 * (9 * 256 * 256 + 2 * 256)
    + (256 * 7 + 7),
    # Project 001: its hybrid CNN's blocks (Conv-BN-ReLU-MaxPool-Dropout2d(0.25); BN, ReLU and dropout 0.5 in
    # the head too, as "each block is followed by"); it gives no widths or dense sizes (these are ours), and
    # base, deep and dropout only in words.
    "hybrid_cnn": (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (6 * 6 * 128 * 256 + 2 * 256)
    + (256 * 128 + 2 * 128) + (128 * 7 + 7),
    "p001_base_cnn": (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + (6 * 6 * 128 * 256 + 256)
    + (256 * 7 + 7),
    "p001_deep_cnn": (9 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128 + 9 * 128 * 256 + 9 * 256 * 256)
    + 2 * 2 * (64 + 128 + 256) + (6 * 6 * 256 * 256 + 256) + (256 * 7 + 7),
    "p001_dropout_cnn": (9 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128 + 9 * 128 * 256 + 9 * 256 * 256)
    + 2 * 2 * (64 + 128 + 256) + (6 * 6 * 256 * 256 + 2 * 256) + (256 * 7 + 7),  # the deep CNN's, with a BN dense
    # Project 002. Approach 1 normalises after the ReLU, so its convs keep their bias.
    "cnn3": (9 * 32 + 32 + 2 * 32) + (9 * 32 * 64 + 64 + 2 * 64) + (9 * 64 * 128 + 128 + 2 * 128)
    + (6 * 6 * 128 * 256 + 256) + (256 * 7 + 7),
    "p002_wide_cnn": (9 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (9 * 128 * 256 + 2 * 256)
    + (6 * 6 * 256 * 512 + 512) + (512 * 7 + 7),
    "improved_cnn": (9 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128 + 9 * 128 * 256 + 9 * 256 * 256)
    + 2 * 2 * (64 + 128 + 256) + (6 * 6 * 256 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 7 + 7),
    # Project 002's notebook printed 1,275,335 for it: this plus the 224 conv and 256 dense biases BN cancels.
    "p002_basic_cnn": (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128)
    + (6 * 6 * 128 * 256 + 2 * 256) + (256 * 7 + 7),
    "resnet_fer": (9 * 32 + 2 * 32)
    + 2 * 2 * (9 * 32 * 32 + 2 * 32)
    + (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64 + 3 * 2 * 64) + 2 * (9 * 64 * 64 + 2 * 64)
    + (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128 + 3 * 2 * 128) + 2 * (9 * 128 * 128 + 2 * 128)
    + (128 * 7 + 7),
    # patches Linear(64, 64), class token, 37 positions; per encoder layer: attention 4 x (64 * 64 + 64),
    # two LayerNorms, MLP 64-2048-64; head Linear(64, 32), Linear(32, 7).
    "p002_vit": (8 * 8 * 64 + 64) + 64 + 37 * 64
    + 4 * (4 * (64 * 64 + 64) + 2 * 2 * 64 + (64 * 2048 + 2048) + (2048 * 64 + 64))
    + (64 * 32 + 32) + (32 * 7 + 7),
    # Project 004.
    "baseline_cnn": (25 * 32 + 32) + (25 * 32 * 64 + 64) + (12 * 12 * 64 * 128 + 128) + (128 * 7 + 7),
    "p004_baseline_cnn_v2": (25 * 32 + 2 * 32) + (25 * 32 * 64 + 2 * 64) + (64 * 512 + 512) + (512 * 256 + 256)
    + (256 * 128 + 128) + (128 * 7 + 7),
    "p004_deep_cnn_v1": (9 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128
                         + 9 * 128 * 256 + 9 * 256 * 256)
    + 2 * 2 * (32 + 64 + 128 + 256) + (256 * 512 + 2 * 512) + (512 * 7 + 7),
    "deep_cnn_v2": (9 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128
                    + 9 * 128 * 192 + 9 * 192 * 192)
    + 2 * 2 * (32 + 64 + 128 + 192) + (192 * 256 + 2 * 256) + (256 * 7 + 7),
    # CBAM per block: shared MLP C -> C/8 -> C with biases, then a 1x1 conv over [mean, max] with a bias.
    "p004_cbam_cnn": (9 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128)
    + 2 * 2 * (32 + 64 + 128)
    + sum(2 * c * (c // 8) + c // 8 + c + (2 + 1) for c in (32, 64, 128))
    + (128 * 256 + 2 * 256) + (256 * 7 + 7),
}


@pytest.mark.parametrize("name", sorted(PROJECT_TRAINABLE))
def test_project_networks_have_the_parameter_count_of_their_layers(name, built):
    assert count_trainable(built(name)) == PROJECT_TRAINABLE[name]


def test_parameter_counts_that_project_000_states(built):
    assert f"{count_trainable(built('p000_simple_cnn')) / 1e6:.2f}M" == "4.74M"
    assert f"{count_trainable(built('p000_deep_cnn')) / 1e6:.2f}M" == "1.70M"
    assert count_trainable(built("resnet_fer_wide")) == 2_778_311
    batch_norm_channels = 64 + 4 * 64 + 5 * 128 + 5 * 256
    assert built("resnet_fer_wide").count_params() == 2_778_311 + 2 * batch_norm_channels  # moving mean, variance


def test_parameter_counts_that_project_003_states_against_its_stated_layers(built):
    """Project 003 states sizes its own layer lists cannot give; the builders follow the layers, and
    the study's claims table (tuning/studies/p003.yaml) marks the stated sizes contradicted."""
    mlp = (48 * 48 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128) + (128 * 7 + 7)  # 512-256-128
    simple = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (12 * 12 * 64 * 128 + 128) + (128 * 64 + 64) + (64 * 7 + 7)
    tiny = (9 * 16 + 16) + (24 * 24 * 16 * 7 + 7)  # one 16-channel conv, 2x2 pooling, one dense layer
    assert [count_trainable(built(n)) for n in ("mlp", "simple_cnn", "tiny_cnn")] == [mlp, simple, tiny]
    assert (mlp, tiny) == (1_345_287, 64_679)  # stated: "1.28M" (5% fewer) and "~50k" (23% fewer)
    assert simple / mlp == pytest.approx(0.897, abs=1e-3)  # stated: "10x fewer parameters than the MLP"


def _head(model):
    """Spatial dropout and dropout (rate) and dense (units) layers, in the order they run."""
    labels = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.SpatialDropout2D):
            labels.append(f"spatial{layer.rate:g}")
        elif isinstance(layer, keras.layers.Dropout):
            labels.append(f"dropout{layer.rate:g}")
        elif isinstance(layer, keras.layers.Dense):
            labels.append(f"dense{layer.units}")
    return labels


# Dropout and dense layers where the descriptions put them (spatial dropout after each block's pooling).
PROJECT_HEADS = {
    "p000_simple_cnn": ["dense512", "dropout0.5", "dense7"],
    "p000_deep_cnn": ["dense512", "dropout0.5", "dense256", "dropout0.5", "dense7"],
    "resnet_fer_wide": ["dropout0.5", "dense7"],
    "hybrid_cnn": ["spatial0.25"] * 3 + ["dense256", "dropout0.5", "dense128", "dropout0.5", "dense7"],
    "p001_base_cnn": ["dense256", "dense7"],
    "p001_deep_cnn": ["dense256", "dense7"],
    "p001_dropout_cnn": ["spatial0.25"] * 3 + ["dense256", "dropout0.5", "dense7"],
    "cnn3": ["dropout0.5", "dense256", "dropout0.3", "dense7"],
    "p002_wide_cnn": ["dropout0.5", "dense512", "dropout0.5", "dense7"],
    "improved_cnn": ["dropout0.4", "dense1024", "dropout0.4", "dense512", "dropout0.4", "dense7"],
    "p002_basic_cnn": ["dropout0.25"] * 3 + ["dense256", "dropout0.5", "dense7"],
    "resnet_fer": ["dense7"],
    "baseline_cnn": ["dropout0.3", "dense128", "dropout0.3", "dense7"],
    "p004_baseline_cnn_v2": ["spatial0.2"] * 2 + ["dropout0.6", "dense512", "dropout0.6", "dense256", "dropout0.6",
                                                  "dense128", "dropout0.6", "dense7"],
    "p004_deep_cnn_v1": ["dense512", "dropout0.5", "dense7"],
    "deep_cnn_v2": ["spatial0.1"] * 4 + ["dense256", "dropout0.7", "dense7"],
    "p004_cbam_cnn": ["dense256", "dropout0.5", "dense7"],
}


@pytest.mark.parametrize("name", sorted(PROJECT_HEADS))
def test_project_networks_drop_out_where_the_descriptions_say(name, built):
    assert _head(built(name)) == PROJECT_HEADS[name]


def test_project_002_normalises_after_the_relu_first_and_before_it_then(built):
    def block1(name):
        return [layer.name for layer in built(name).layers if layer.name.startswith("block1_")]

    assert block1("cnn3") == ["block1_conv1", "block1_relu1", "block1_bn1", "block1_pool"]
    assert block1("p002_wide_cnn") == ["block1_conv1", "block1_bn1", "block1_relu1", "block1_pool"]


def test_resnet_fer_wide_has_project_000s_imagenet_stem(built):
    model = built("resnet_fer_wide")
    assert model.get_layer("stem_conv").kernel.shape == (7, 7, 1, 64)
    assert model.get_layer("stem_pool").output.shape == (None, 12, 12, 64)


def test_project_004_cbam_attends_after_pooling_with_a_1x1_spatial_conv(built):
    for name, kernel, size in (("cbam_cnn", 7, 48), ("p004_cbam_cnn", 1, 24)):
        attention = built(name).get_layer("block1_spatial_attention")
        assert attention.kernel.shape == (kernel, kernel, 2, 1)
        assert attention.output.shape[1:3] == (size, size), name


def test_project_002_vit_attends_across_the_batch_and_gives_every_face_the_same_logits(built, batch):
    """The collapse: its class token, the same in every image, only ever attends to copies of itself."""
    images = batch[0]
    others = images.copy()
    others[1:] = 255 - others[1:]
    model = built("p002_vit")
    encoder = keras.Model(model.input, model.get_layer("encoder1_ln2").output)
    patch_tokens = [keras.ops.convert_to_numpy(encoder(x))[0, 1:] for x in (images, others)]
    assert not np.allclose(*patch_tokens, atol=1e-3)  # image 0's tokens depend on the other images
    out = model.predict_on_batch(images)
    np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), atol=1e-5)
    assert np.ptp(built("vit").predict_on_batch(images), axis=0).max() > 1e-3


@pytest.mark.parametrize("name", ["vit", "cbam_cnn", "mini_xception"])
def test_mixed_bfloat16_still_gives_float32_logits(name, batch, bfloat16_policy):
    model = build_model(name)
    assert model.get_layer("rescale").compute_dtype == "bfloat16"
    out = model.predict_on_batch(batch[0])
    assert out.dtype == np.float32 and out.shape == (8, NUM_CLASSES)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_gives_identical_predictions(name, built, batch, tmp_path):
    model = built(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict_on_batch(batch[0]), model.predict_on_batch(batch[0]))


@pytest.mark.parametrize("name", MODELS)
def test_a_few_steps_on_one_batch_lower_the_loss(name, batch):
    # Dropout off so that five steps are not drowned in its noise; eager is faster than tracing here.
    model = build_model(name, **{key: 0.0 for key in default_hparams(name) if key.endswith("dropout")})
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    losses = [float(model.train_on_batch(*batch)) for _ in range(5)]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


# Every model on the JAX backend, in a fresh process that never imports TensorFlow: the weights built
# here give the same logits there. Models covering every block and custom layer also train there.
TRAIN_ON_JAX = ("tiny_cnn", "resnet_fer", "mini_xception", "cbam_cnn", "vit")
JAX_SCRIPT = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras
import numpy as np
from fer_keras.models import build_model, default_hparams
folder, train, names = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
data = np.load(os.path.join(folder, "expected.npz"))
for name in names:
    model = build_model(name, **{key: 0.0 for key in default_hparams(name) if key.endswith("dropout")})
    model.load_weights(os.path.join(folder, name + ".weights.h5"))
    np.testing.assert_allclose(model.predict_on_batch(data["images"]), data[name], rtol=1e-4, atol=1e-4,
                               err_msg=name)
    if name in train:
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        losses = [float(model.train_on_batch(data["images"], data["labels"])) for _ in range(5)]
        assert losses[-1] < losses[0], (name, losses)
    print("ok", name, flush=True)
assert keras.backend.backend() == "jax" and "tensorflow" not in sys.modules
"""


@pytest.mark.slow
def test_every_model_gives_the_same_logits_on_jax(built, batch, tmp_path):
    expected = {"images": batch[0], "labels": batch[1]}
    for name in list_models():
        built(name).save_weights(tmp_path / f"{name}.weights.h5")
        expected[name] = built(name).predict_on_batch(batch[0])
    np.savez(tmp_path / "expected.npz", **expected)
    args = [sys.executable, "-c", JAX_SCRIPT, str(tmp_path), ",".join(TRAIN_ON_JAX), *list_models()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.split() == [word for name in list_models() for word in ("ok", name)]


def _override(name):
    """A hyperparameter change for `name` that must show in the built model: halve the widths, else
    change the dropout."""
    defaults = default_hparams(name)
    if "widths" in defaults:
        return {"widths": [max(w // 2, 1) for w in defaults["widths"]]}
    if "width" in defaults:
        return {"width": defaults["width"] // 2}
    return {"dropout": 0.25}


@pytest.mark.parametrize("name", list_models())
def test_hyperparameter_override_changes_the_model(name, built):
    override = _override(name)
    model = build_model(name, **override)
    if "dropout" in override:
        assert model.get_config() != built(name).get_config()
        assert {layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)} == {0.25}
    else:
        assert model.count_params() < built(name).count_params()


def test_none_hyperparameters_keep_the_defaults():
    assert build_model("resnet_fer", dropout=None, widths=None).get_config() == build_model("resnet_fer").get_config()


def test_l2_adds_regularisation_losses_and_the_old_name_is_refused_with_a_hint():
    assert not build_model("deep_cnn").losses
    assert len(build_model("deep_cnn", l2=1e-4).losses) == 8
    with pytest.raises(ValueError, match="no hyperparameter weight_decay: the builders' L2 penalty is now `l2`"):
        build_model("deep_cnn", weight_decay=1e-4)


@pytest.mark.parametrize("key, value, expected", [
    ("dropout", "abc", "a finite number"), ("dropout", float("inf"), "a finite number"),
    ("widths", [32, 0.5], "a list of integers"), ("dense_units", 128, "a list of integers"),
])
def test_hyperparameters_of_the_wrong_kind_are_refused_naming_the_kind(key, value, expected):
    with pytest.raises(ValueError, match=f"'simple_cnn' hyperparameter {key}: expected {expected}"):
        build_model("simple_cnn", **{key: value})
    assert build_model("simple_cnn", dropout=1).name == "simple_cnn"  # an int where a float goes


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*mini_xception.*vit"):
        build_model("resnet99")


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(ValueError, match="no hyperparameter depth.*dropout"):
        build_model("mlp", depth=3)


CUSTOM_LAYERS = [
    (fer_layers.ChannelAttention(ratio=4, name="ca"), (2, 6, 6, 16), (2, 6, 6, 16)),
    (fer_layers.SpatialAttention(kernel_size=5), (2, 6, 6, 16), (2, 6, 6, 16)),
    (fer_layers.PatchEmbedding(patch_size=8, hidden_dim=32), (2, 48, 48, 1), (2, 36, 32)),
    (fer_layers.ClassToken(stddev=1.0), (2, 36, 32), (2, 37, 32)),
    (fer_layers.PositionEmbedding(stddev=0.05), (2, 37, 32), (2, 37, 32)),
    (fer_layers.SwapBatchAxis(), (2, 37, 32), (37, 2, 32)),
]


@pytest.mark.parametrize(("layer", "input_shape", "output_shape"), CUSTOM_LAYERS, ids=lambda v: type(v).__name__)
def test_custom_layer_config_round_trips_and_shapes(layer, input_shape, output_shape):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    assert keras.saving.get_registered_object(f"fer_keras>{type(layer).__name__}") is type(layer)
    out = layer(np.random.default_rng(0).normal(size=input_shape).astype("float32"))
    assert tuple(out.shape) == output_shape


def test_attention_layers_reweight_their_input():
    x = np.random.default_rng(0).uniform(1, 2, size=(1, 6, 6, 8)).astype("float32")
    for layer in (fer_layers.ChannelAttention(ratio=2), fer_layers.SpatialAttention()):
        gated = keras.ops.convert_to_numpy(layer(x))
        assert np.all((gated > 0) & (gated < x))  # sigmoid gates lie strictly between 0 and 1


def test_count_macs_matches_hand_counts():
    image = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(image)
    x = keras.layers.SeparableConv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    conv_model = keras.Model(image, keras.layers.Dense(7)(x))
    conv = 48 * 48 * 4 * 9
    separable = 24 * 24 * 4 * (9 + 8)
    assert count_macs(conv_model) == conv + separable + 24 * 24 * 8 * 7

    tokens = keras.Input((10, 16))
    attention_model = keras.Model(tokens, keras.layers.MultiHeadAttention(2, 8)(tokens, tokens))
    projections = 4 * 10 * 16 * 16  # query, key, value, output
    assert count_macs(attention_model) == projections + 10 * 10 * (16 + 16)

    # Attention across the batch (p002_vit): for one image, each token attends only to itself.
    swapped = fer_layers.SwapBatchAxis()(tokens)
    batch_attention_model = keras.Model(tokens, keras.layers.MultiHeadAttention(2, 8)(swapped, swapped))
    assert count_macs(batch_attention_model) == projections + 10 * 1 * (16 + 16)


@pytest.mark.slow
def test_table_cli_lists_every_model(capsys):
    main([])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "parameters", "trainable"]
    assert [line.split()[0] for line in lines[1:]] == list_models()


def test_table_cli_markdown_and_unknown_name(capsys):
    main(["--markdown", "mini_xception", "vit"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name | parameters | trainable |") and len(lines) == 4
    assert lines[2].startswith("| mini_xception | 58,423 | 56,951 |")  # 736 BN channels: mean, variance
    with pytest.raises(SystemExit) as exit_info:
        main(["resnet99"])
    assert exit_info.value.code == 2
    assert "unknown model resnet99" in capsys.readouterr().err
