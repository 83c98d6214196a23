"""Training-time augmentation presets built from Keras 3 preprocessing layers, and three small
layers Keras lacks to copy the original projects' albumentations pipelines: one op applied with a
probability per image, Gaussian noise of a variance drawn per image, and several square holes.

The augmenter runs on batches inside `tf.data` (see `fer_keras.data.pipeline.make_dataset`, which
applies it only when `training=True`), so it never becomes part of a model or an exported graph.
`python -m fer_keras.data.augment preview --preset NAME [--data PATH] [--n 16] [--seed S] --out grid.png`
draws a preset on sample faces, to see what training will see.
"""

import itertools

import keras
import numpy as np

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import NUM_CLASSES
from fer_keras.data import default_data, load_fer2013, sample_faces
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, check_output

VALUE_RANGE = (0, 255)
FILL_MODE = "nearest"  # no black corners, and ~20% cheaper than "reflect" on 48x48 batches
ERASE_FILL = 128.0  # mid gray, about the FER2013 pixel mean; a constant is ~2.5x cheaper than noise

_STRONG = {
    "flip": True,
    "rotation_deg": 15,
    "translation": 0.1,
    "zoom": 0.1,
    "shear": 0.1,
    "brightness": 0.2,
    "contrast": 0.2,
    "erasing_prob": 0.1,
    "noise_std": 3.0,  # in 0..255 pixel units
}
# Preset -> knob values; knobs are applied stage by stage, in the order of `_STAGES` below.
PRESET_KNOBS = {
    "none": {},
    "light": {"flip": True, "rotation_deg": 10, "brightness": 0.2, "contrast": 0.2},
    # light plus shifts of up to 10% (whole pixels): the random-crop regulariser of the FER2013 papers.
    "medium": {"flip": True, "rotation_deg": 10, "translation": 0.1, "brightness": 0.2, "contrast": 0.2},
    "strong": _STRONG,
    # The original projects' pipelines, with their limits and per-op probabilities.
    # "Slight" random rotation only, no flip or colour (project 001); +-10 degrees as project 002's
    # RandomRotation(10).
    "rotation": {"rotation_deg": 10},
    # RandomHorizontalFlip, RandomRotation(10): project 002's first CNN; project 004's CBAM CNN.
    "flip_rotation": {"flip": True, "rotation_deg": 10},
    # Project 000 (torchvision): flip, RandomRotation(10), RandomAffine(translate=(0.1, 0.1)).
    "torchvision_000": {"flip": True, "rotation_deg": 10, "translation": 0.1},
    # Project 002's ImprovedCNN (albumentations): Rotate(limit=15, p=0.5), HorizontalFlip(p=0.5),
    # RandomBrightnessContrast(p=0.3) with its default limits of 0.2.
    "albumentations_002_improved": {
        "flip": True, "rotation_deg": 15, "geometry_p": 0.5, "brightness": 0.2, "contrast": 0.2, "photometric_p": 0.3,
    },
    # Project 002's basic CNN, ResNet and ViT (albumentations): HorizontalFlip(p=0.5),
    # ShiftScaleRotate(shift 0.1, scale 0.1, rotate 15, p=0.5), RandomBrightnessContrast(0.2, 0.2, p=0.5),
    # GaussNoise(var_limit=(10, 50), p=0.3), CoarseDropout(8 holes of 8x8 pixels, p=0.3).
    "albumentations_002": {
        "flip": True,
        "rotation_deg": 15,
        "translation": 0.1,
        "zoom": 0.1,
        "geometry_p": 0.5,
        "brightness": 0.2,
        "contrast": 0.2,
        "photometric_p": 0.5,
        "noise_var": (10.0, 50.0),  # grey levels squared: std 3.2 to 7.1
        "noise_p": 0.3,
        "holes": (8, 8),  # (count, side in pixels), filled with 0 as albumentations does
        "holes_p": 0.3,
    },
    # Project 004's deep CNN v3 (torchvision): flip, rotation 15, translation 10%, scale 90-110%,
    # shear, brightness/contrast jitter, RandomErasing(p=0.1). It states no shear or jitter strength:
    # these are strong's, and this is strong without its noise.
    "torchvision_004": {knob: value for knob, value in _STRONG.items() if knob != "noise_std"},
}
PRESETS = tuple(PRESET_KNOBS)

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
    "rotation_deg": lambda deg, **kw: keras.layers.RandomRotation(
        deg / 360, fill_mode=FILL_MODE, **kw
    ),
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


def build_augmenter(preset="none", mixup=0.0, cutmix=0.0, seed=0):
    """Return `augment(images, labels) -> (images, labels)` for float 0..255 batches, or None.

    Labels are one-hot; MixUp/CutMix (Beta alpha, 0 = off; both on = MixUp then CutMix) make them
    soft but still summing to 1. Every layer gets its own seed derived from `seed`, computes in
    float32 whatever the global dtype policy (mixed_bfloat16 is for the model), and runs with
    `training=True`: the augmenter is only ever meant for training batches.
    """
    if preset not in PRESET_KNOBS:
        raise FerError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
    if not (0 <= mixup and 0 <= cutmix <= 1):
        raise FerError(f"need mixup alpha >= 0 and cutmix alpha in [0, 1], got {mixup}, {cutmix}")
    seeds = itertools.count(seed)
    image_layers = _pipeline(_image_layers(PRESET_KNOBS[preset], seeds))
    alphas = {"mixup": mixup, "cutmix": cutmix}
    mixers = _pipeline([_MIXERS[k](alphas[k], seed=next(seeds), dtype="float32") for k in _MIXERS if alphas[k]])
    if image_layers is None and mixers is None:
        return None

    def augment(images, labels):
        images = keras.ops.convert_to_tensor(images, "float32")
        labels = keras.ops.convert_to_tensor(labels, "float32")
        if image_layers is not None:
            images = keras.ops.clip(image_layers(images, training=True), *VALUE_RANGE)
        if mixers is not None:
            mixed = mixers({"images": images, "labels": labels}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    return augment


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


def _pipeline(layers):
    """A `keras.layers.Pipeline` of `layers`, or None without any."""
    return keras.layers.Pipeline(layers) if layers else None


def save_augment_grid(images, preset, path, seed=0, draws=5):
    """Save a PNG grid to eyeball a preset: one row per image, the original then `draws` draws."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    augment = build_augmenter(preset, seed=seed)
    images = np.asarray(images, dtype="float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[np.zeros(len(images), dtype=int)]
    columns = [images] + [
        keras.ops.convert_to_numpy(augment(images, labels)[0]) if augment else images
        for _ in range(draws)
    ]
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
