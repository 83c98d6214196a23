"""Training-time augmentation presets built from Keras 3 preprocessing layers, and three small
layers Keras lacks to copy the original projects' albumentations pipelines: one op applied with a
probability per image, Gaussian noise of a variance drawn per image, and several square holes.

A preset is an `Augmentation` layer that `fit` runs in the training step, in front of the network
(`Augmented`), so it runs where the model runs: on the GPU when there is one. It is the identity
outside training, and only the network is ever saved or exported. MixUp and CutMix change labels,
which a model never sees: `build_mixer` gives them to `tf.data` (`fer_keras.data.pipeline.make_dataset`).
`python -m fer_keras.data.augment preview --preset NAME [--data PATH] [--n 16] [--seed S] --out grid.png`
draws a preset on sample faces, to see what training will see.
"""

import itertools

import keras
import numpy as np

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.data import default_data, load_fer2013, sample_faces
from fer_keras.data.presets import PRESET_KNOBS, PRESETS
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, check_output

VALUE_RANGE = (0, 255)
FILL_MODE = "nearest"  # no black corners, and ~20% cheaper than "reflect" on 48x48 batches
ERASE_FILL = 128.0  # mid gray, about the FER2013 pixel mean; a constant is ~2.5x cheaper than noise


register = keras.saving.register_keras_serializable(package="fer_keras")


@register
class RandomApply(keras.layers.Layer):
    """Applies `layer` to each image with probability `rate`, else passes the image through.

    Albumentations' `p` and torchvision's RandomApply; Keras' image layers apply to every image.
    """

    def __init__(self, layer, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        draws = keras.random.uniform((keras.ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator)
        return keras.ops.where(draws < self.rate, self.layer(images, training=training), images)

    def get_config(self):
        layer = keras.saving.serialize_keras_object(self.layer)
        return {**super().get_config(), "layer": layer, "rate": self.rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "layer": keras.saving.deserialize_keras_object(config["layer"])})


@register
class RandomGaussianNoise(keras.layers.Layer):
    """Adds zero-mean Gaussian noise whose variance is drawn per image from `variance` (low, high).

    Albumentations' GaussNoise(var_limit); Keras' GaussianNoise has one fixed standard deviation.
    """

    def __init__(self, variance, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.variance = variance
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images):
        shape = keras.ops.shape(images)
        variance = keras.random.uniform((shape[0], 1, 1, 1), *self.variance, seed=self.seed_generator)
        return images + keras.ops.sqrt(variance) * keras.random.normal(shape, seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "variance": self.variance, "seed": self.seed}


@register
class CoarseDropout(keras.layers.Layer):
    """Fills `holes` squares of `size` pixels, each placed uniformly (overlaps allowed), with `fill_value`.

    Albumentations' CoarseDropout with as many holes and pixels as its maximum (its default);
    Keras' RandomErasing erases one box per image.
    """

    def __init__(self, holes, size, fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.holes = holes
        self.size = size
        self.fill_value = fill_value
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images):
        batch = keras.ops.shape(images)[0]
        rows, cols = self._spans(batch, images.shape[1]), self._spans(batch, images.shape[2])
        inside = rows[:, :, :, None] & cols[:, :, None, :]  # (batch, holes, height, width)
        return keras.ops.where(keras.ops.any(inside, axis=1)[..., None], self.fill_value, images)

    def _spans(self, batch, length):
        """Whether each position along an axis of `length` lies in each hole: (batch, holes, length)."""
        start = keras.random.randint((batch, self.holes, 1), 0, length - self.size + 1, seed=self.seed_generator)
        position = keras.ops.arange(length)
        return (position >= start) & (position < start + self.size)

    def get_config(self):
        return {**super().get_config(), "holes": self.holes, "size": self.size, "fill_value": self.fill_value,
                "seed": self.seed}


# Knob -> layer factory `(value, **kw) -> layer`, kw = seed and dtype.
_LAYERS = {
    "flip": lambda _, **kw: keras.layers.RandomFlip("horizontal", **kw),
    "rotation_deg": lambda deg, **kw: rotation(deg / 360, **kw),
    # Each bilinear pass blurs a 48x48 face a little; a shift keeps it sharp with whole pixels.
    "translation": lambda f, **kw: keras.layers.RandomTranslation(
        f, f, fill_mode=FILL_MODE, interpolation="nearest", **kw
    ),
    "zoom": lambda f, **kw: keras.layers.RandomZoom(f, fill_mode=FILL_MODE, **kw),
    "shear": lambda f, **kw: keras.layers.RandomShear(f, f, fill_mode=FILL_MODE, **kw),
    "brightness": lambda f, **kw: keras.layers.RandomBrightness(f, value_range=VALUE_RANGE, **kw),
    "contrast": lambda f, **kw: keras.layers.RandomContrast(f, value_range=VALUE_RANGE, **kw),
    # A (p, p) factor makes the per-image erasing probability exactly p.
    "erasing_prob": lambda p, **kw: keras.layers.RandomErasing(
        (p, p), fill_value=ERASE_FILL, value_range=VALUE_RANGE, **kw
    ),
    # GaussianNoise only accepts stddev <= 1, so it acts on a 0..1 view of the images.
    "noise_std": lambda std, seed, dtype: keras.layers.Pipeline(
        [
            keras.layers.Rescaling(1 / VALUE_RANGE[1], dtype=dtype),
            keras.layers.GaussianNoise(std / VALUE_RANGE[1], seed=seed, dtype=dtype),
            keras.layers.Rescaling(VALUE_RANGE[1], dtype=dtype),
        ]
    ),
    "noise_var": lambda variance, **kw: RandomGaussianNoise(variance, **kw),
    "holes": lambda holes, **kw: CoarseDropout(*holes, **kw),
}

# Knobs by stage, stages in the order applied: geometric, then photometric, then occlusion and
# noise. A preset's "<stage>_p" knob applies its stage's layers to each image with probability p,
# with one draw for the whole stage (ShiftScaleRotate is one op); without it they apply to all.
_STAGES = {
    "flip": ("flip",),
    "geometry": ("rotation_deg", "translation", "zoom", "shear"),
    "photometric": ("brightness", "contrast"),
    "erasing": ("erasing_prob",),
    "noise": ("noise_std", "noise_var"),
    "holes": ("holes",),
}

# Label-mixing layers, applied last on {"images", "labels"} dicts; the value is the Beta alpha.
_MIXERS = {
    "mixup": lambda alpha, **kw: keras.layers.MixUp(alpha=alpha, **kw),
    # CutMix samples its alpha from `factor`; (alpha, alpha) pins it.
    "cutmix": lambda alpha, **kw: keras.layers.CutMix(factor=(alpha, alpha), **kw),
}
# The mixers' seeds count from seed + MIXER_SEEDS, so that none shares a seed with an image layer.
MIXER_SEEDS = 1000


@register
class Augmentation(keras.layers.Layer):
    """The image layers of augmentation preset `preset`, in order, then a clip to 0..255, on float
    0..255 batches in training; the identity otherwise (evaluation, prediction, export).

    Each layer gets its own seed counted from `seed` and computes in float32 whatever the global
    dtype policy (mixed_bfloat16 is for the network).
    """

    def __init__(self, preset, seed=0, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        if preset not in PRESET_KNOBS:
            raise FerError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
        self.preset, self.seed = preset, seed
        self.pipeline = keras.layers.Pipeline(_image_layers(PRESET_KNOBS[preset], itertools.count(seed)))

    def build(self, input_shape):
        self.pipeline(keras.KerasTensor(input_shape), training=True)  # a symbolic pass builds every layer

    def call(self, images, training=None):
        if not training:
            return images
        return keras.ops.clip(self.pipeline(images, training=True), *VALUE_RANGE)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "preset": self.preset, "seed": self.seed}


class Augmented(keras.Model):
    """`network` behind `augmentation`: the model that `fit` trains, so that augmentation runs in the
    training step. Save, export and ship `network` (`network_of`), never this wrapper."""

    def __init__(self, network, augmentation, **kwargs):
        # float32: the images reach the augmentation as the pipeline made them, not cast to bf16
        super().__init__(**{"name": network.name, "dtype": "float32", **kwargs})
        self.network, self.augmentation = network, augmentation
        self.build(network.input.shape)

    def build(self, input_shape):
        self.augmentation.build(input_shape)  # the network is built already

    def call(self, images, training=None):
        return self.network(self.augmentation(images, training=training), training=training)


def augmented(network, preset="none", seed=0):
    """The model to train: `network` behind preset `preset`'s `Augmentation`; `network` itself for "none"."""
    augmentation = Augmentation(preset, seed=seed)
    return network if preset == "none" else Augmented(network, augmentation)


def network_of(model):
    """The network inside a model from `augmented`: what checkpoints, exports and evaluation use."""
    return model.network if isinstance(model, Augmented) else model


def build_mixer(mixup=0.0, cutmix=0.0, seed=0):
    """`mix(images, labels) -> (images, labels)` for float 0..255 batches with one-hot labels, or None
    when both are off (Beta alpha 0); both on is MixUp then CutMix. The labels come out soft but still
    summing to 1. For training batches only: `make_dataset` applies it in `tf.data`, where labels are."""
    if not (0 <= mixup and 0 <= cutmix <= 1):
        raise FerError(f"need mixup alpha >= 0 and cutmix alpha in [0, 1], got {mixup}, {cutmix}")
    alphas = {"mixup": mixup, "cutmix": cutmix}
    seeds = itertools.count(seed + MIXER_SEEDS)
    layers = [_MIXERS[k](alphas[k], seed=next(seeds), dtype="float32") for k in _MIXERS if alphas[k]]
    if not layers:
        return None
    mixers = keras.layers.Pipeline(layers)

    def mix(images, labels):
        mixed = mixers({"images": keras.ops.convert_to_tensor(images, "float32"),
                        "labels": keras.ops.convert_to_tensor(labels, "float32")}, training=True)
        return mixed["images"], mixed["labels"]

    return mix


def rotation(factor, **kwargs):
    """RandomRotation by `factor` (fractions of a full turn, as Keras takes it) with the presets' fill:
    a +-range for training, or a (turn, turn) pair for one fixed turn (rotation TTA)."""
    return keras.layers.RandomRotation(factor, fill_mode=FILL_MODE, **kwargs)


def _image_layers(knobs, seeds):
    """The layers of a preset's `knobs`, stage by stage, each seeded with the next of `seeds`."""
    layers = []
    for stage, names in _STAGES.items():
        stage_layers = [_LAYERS[k](knobs[k], seed=next(seeds), dtype="float32") for k in names if k in knobs]
        if stage_layers and f"{stage}_p" in knobs:
            stage_layers = [RandomApply(keras.layers.Pipeline(stage_layers), knobs[f"{stage}_p"], seed=next(seeds),
                                        dtype="float32")]
        layers += stage_layers
    return layers


def save_augment_grid(images, preset, path, seed=0, draws=5):
    """Save a PNG grid to eyeball a preset: one row per image, the original then `draws` draws."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    augmentation = Augmentation(preset, seed=seed)
    images = np.asarray(images, dtype="float32")
    columns = [images] + [keras.ops.convert_to_numpy(augmentation(images, training=True)) for _ in range(draws)]
    fig = Figure(figsize=(draws + 1, len(images) + 0.3))
    axes = fig.subplots(len(images), draws + 1, squeeze=False)
    for col, batch in enumerate(columns):
        for row, ax in enumerate(axes[:, col]):
            ax.imshow(batch[row, :, :, 0], cmap="gray", vmin=0, vmax=255)
            ax.axis("off")
    axes[0, 0].set_title("original", fontsize=7)
    fig.suptitle(f"augmentation preset: {preset}", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


@user_errors
def main(argv=None):
    parser = ArgumentParser(prog="python -m fer_keras.data.augment", description="Augmentation presets.")
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser("preview", help="PNG grid: sample faces (rows), each original then 5 random draws")
    preview.add_argument("--preset", required=True, choices=PRESETS, help="augmentation preset")
    preview.add_argument("--data", help="FER2013 CSV (any layout; default: the synthetic default data)")
    preview.add_argument("--n", type=int, default=16, help="number of faces (default 16)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the face sample and of the draws")
    preview.add_argument("--out", required=True, help="PNG file for the grid")
    args = parser.parse_args(argv)
    if args.n < 1:
        preview.error("--n must be at least 1")
    check_output(args.out)
    faces = sample_faces(load_fer2013(args.data or default_data()), args.n, args.seed)
    save_augment_grid(faces.images, args.preset, args.out, seed=args.seed)
    print(f"preset {args.preset} drawn on {len(faces)} faces: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
