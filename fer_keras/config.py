"""Training configuration: a flat dict resolved as DEFAULTS < recipe < config file < flags.

Every key is documented in `HELP` (the `fer_keras.train` flags are generated from it) and checked by
`validate`, so a typo or a bad value fails before any data is read, with the key named.
"""

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from fer_keras.augment import PRESETS
from fer_keras.data.pipeline import SAMPLINGS
from fer_keras.distribute import STRATEGIES
from fer_keras.errors import FerError
from fer_keras.losses import LOSSES
from fer_keras.optim import OPTIMIZERS, SCHEDULES
from fer_keras.tracking import MODES

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

DEFAULTS = {
    "data": None,
    "limit": None,
    "val_fraction": 0.1,
    "model": "simple_cnn",
    "model_args": {},
    "augment": "none",
    "mixup": 0.0,
    "cutmix": 0.0,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "nesterov": False,
    "clipnorm": None,
    "batch_size": 64,
    "epochs": 10,
    "schedule": "constant",
    "restart_epochs": 10,
    "plateau_factor": 0.5,
    "plateau_patience": 3,
    "warmup_epochs": 0.0,
    "loss": "crossentropy",
    "label_smoothing": 0.0,
    "focal_gamma": 2.0,
    "focal_alpha": None,
    "class_weight": None,
    "sampling": "shuffle",
    "early_stopping": None,
    "precision": "float32",
    "seed": 0,
    "strategy": "default",
    "wandb": "auto",
    "wandb_project": "fer_keras",
    "group": None,
    "tags": [],
    "name": None,
    "out": None,
    "recipe": None,
    "overfit_check": None,
    "export": True,
}

HELP = {
    "data": "FER2013 CSV in any layout, plain or .gz (null: the embedded synthetic data)",
    "limit": "use only N rows, sampled stratified by class and Usage with the seed",
    "val_fraction": "validation share when the file has no Usage column",
    "model": "registered architecture (python -m fer_keras.models lists them)",
    "model_args": "builder hyperparameters, e.g. {dropout: 0.3, widths: [32, 64]} (flag: --set)",
    "augment": "augmentation preset",
    "mixup": "MixUp Beta alpha (0 = off)",
    "cutmix": "CutMix Beta alpha (0 = off)",
    "optimizer": "optimizer",
    "learning_rate": "peak learning rate",
    "weight_decay": "decoupled weight decay of the optimizer (biases and norms excluded)",
    "momentum": "SGD momentum",
    "nesterov": "SGD Nesterov momentum",
    "clipnorm": "clip each gradient to this norm (null = off)",
    "batch_size": "global batch size",
    "epochs": "number of epochs",
    "schedule": "learning-rate schedule",
    "restart_epochs": "cosine_restarts period in epochs",
    "plateau_factor": "plateau: multiply the rate by this when val_loss stalls",
    "plateau_patience": "plateau: epochs without val_loss improvement before reducing",
    "warmup_epochs": "linear warm-up length in epochs (0 = off)",
    "loss": "loss function",
    "label_smoothing": "cross-entropy label smoothing",
    "focal_gamma": "focal loss focusing parameter gamma",
    "focal_alpha": "focal loss alpha: null (1), a number, 'balanced' or a list of 7 class weights",
    "class_weight": "per-sample weights from class frequencies (balanced) or null",
    "sampling": "shuffle, or balanced (classes drawn uniformly)",
    "early_stopping": "stop after this many epochs without val_accuracy gain (null = off)",
    "precision": "dtype policy",
    "seed": "seed of every random thing (weights, shuffling, augmentation, splits)",
    "strategy": "tf.distribute strategy: one device, all local GPUs (mirrored), or the TF_CONFIG cluster (multi_worker)",
    "wandb": "W&B mode (auto: online if an API key is configured, else offline)",
    "wandb_project": "W&B project",
    "group": "W&B group",
    "tags": "W&B tags",
    "name": "W&B run name",
    "out": "run folder (null: runs/<model>-<timestamp>); rerun with the same one to resume",
    "recipe": "named recipe (fer_keras/recipes/NAME.yaml) under the config file and flags",
    "overfit_check": "sanity check: train on N samples without regularisation, report 100% or not",
    "export": "write a SavedModel of the best checkpoint to <out>/savedmodel at the end",
}


@dataclass(frozen=True)
class _Spec:
    """What a key accepts: a type, optional choices or bounds, and whether null is allowed."""

    type: type
    choices: tuple = ()
    low: float = None
    high: float = None
    optional: bool = False

    def describe(self):
        """What is expected, for error messages."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = {int: "an integer", float: "a number", bool: "true or false"}.get(
                self.type, f"a {self.type.__name__}"
            )
            if self.low is not None or self.high is not None:
                text += f" in [{self.low if self.low is not None else '-inf'}, "
                text += f"{self.high if self.high is not None else 'inf'}]"
        return text + (" or null" if self.optional else "")

    def check(self, key, value):
        """`value` converted to this spec's type (an int where a float goes); FerError if it does not fit."""
        if value is None and self.optional:
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        fits = (
            isinstance(value, self.type)
            and not (self.type is int and isinstance(value, bool))
            and (not self.choices or value in self.choices)
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
        )
        if not fits:
            raise FerError(f"config key {key!r}: expected {self.describe()}, got {value!r}")
        return value


SPECS = {
    "data": _Spec(str, optional=True),
    "limit": _Spec(int, low=1, optional=True),
    "val_fraction": _Spec(float, low=0.0, high=0.9),
    "model": _Spec(str),
    "model_args": _Spec(dict),
    "augment": _Spec(str, choices=PRESETS),
    "mixup": _Spec(float, low=0.0),
    "cutmix": _Spec(float, low=0.0, high=1.0),
    "optimizer": _Spec(str, choices=tuple(OPTIMIZERS)),
    "learning_rate": _Spec(float, low=0.0),
    "weight_decay": _Spec(float, low=0.0),
    "momentum": _Spec(float, low=0.0, high=1.0),
    "nesterov": _Spec(bool),
    "clipnorm": _Spec(float, low=0.0, optional=True),
    "batch_size": _Spec(int, low=1),
    "epochs": _Spec(int, low=1),
    "schedule": _Spec(str, choices=SCHEDULES),
    "restart_epochs": _Spec(int, low=1),
    "plateau_factor": _Spec(float, low=0.0, high=1.0),
    "plateau_patience": _Spec(int, low=0),
    "warmup_epochs": _Spec(float, low=0.0),
    "loss": _Spec(str, choices=LOSSES),
    "label_smoothing": _Spec(float, low=0.0, high=0.99),
    "focal_gamma": _Spec(float, low=0.0),
    "focal_alpha": None,  # several shapes: checked by _check_focal_alpha
    "class_weight": _Spec(str, choices=("balanced",), optional=True),
    "sampling": _Spec(str, choices=SAMPLINGS),
    "early_stopping": _Spec(int, low=1, optional=True),
    "precision": _Spec(str, choices=("float32", "mixed_bfloat16")),
    "seed": _Spec(int, low=0),
    "strategy": _Spec(str, choices=STRATEGIES),
    "wandb": _Spec(str, choices=MODES),
    "wandb_project": _Spec(str),
    "group": _Spec(str, optional=True),
    "tags": _Spec(list),
    "name": _Spec(str, optional=True),
    "out": _Spec(str, optional=True),
    "recipe": _Spec(str, optional=True),
    "overfit_check": _Spec(int, low=1, optional=True),
    "export": _Spec(bool),
}


def coerce(text):
    """A command-line string as the value it spells: '3' -> 3, '1e-3' -> 0.001, 'true' -> True,
    'null'/'none' -> None, '[a, b]' / '{k: v}' -> list / dict (YAML), anything else -> the string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    if lowered[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FerError(f"cannot parse {text!r}: {exc}") from None
    return text


def parse_assignments(items):
    """`["dropout=0.3", "width=64"]` -> `{"dropout": 0.3, "width": 64}` (values through `coerce`)."""
    parsed = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FerError(f"--set expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = coerce(value.strip())
    return parsed


def load_config_file(path):
    """A JSON or YAML mapping of config keys (YAML is a superset of JSON, so one parser reads both)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FerError(f"config file {path} is not valid JSON/YAML: {exc}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise FerError(f"config file {path} must hold a mapping of keys, not {type(content).__name__}")
    _check_keys(content, f"config file {path}")
    return content


def list_recipes():
    """Names of the bundled recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name):
    """The settings of recipe `name` (`fer_keras/recipes/NAME.yaml`), with `recipe` set to its name."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FerError(f"unknown recipe {name!r}; known recipes: {', '.join(list_recipes())}")
    return {**load_config_file(path), "recipe": name}


def resolve_config(overrides=None, config_file=None):
    """DEFAULTS < recipe < `config_file` < `overrides` (e.g. flags), validated.

    The recipe is the one named by `overrides`, else by the config file. `model_args` merge key by
    key across the layers (`--set dropout=0.3` keeps the recipe's other builder arguments), except
    that a layer switching to another model starts them afresh.
    """
    overrides = dict(overrides or {})
    _check_keys(overrides, "overrides")
    file_cfg = load_config_file(config_file) if config_file else {}
    recipe = overrides.get("recipe") or file_cfg.get("recipe")
    cfg = {}
    for layer in (DEFAULTS, load_recipe(recipe) if recipe else {}, file_cfg, overrides):
        switches_model = layer.get("model", cfg.get("model")) != cfg.get("model")
        model_args = {} if switches_model else cfg.get("model_args", {})
        cfg.update(layer)
        cfg["model_args"] = {**model_args, **(layer.get("model_args") or {})}
    return validate(cfg)


def validate(cfg):
    """A checked copy of `cfg`: every key known and every value in range (ints widened to floats)."""
    _check_keys(cfg, "config")
    missing = sorted(set(DEFAULTS) - set(cfg))
    if missing:
        raise FerError(f"config lacks keys: {', '.join(missing)}")
    checked = {}
    for key, value in copy.deepcopy(cfg).items():
        if key == "focal_alpha":
            checked[key] = _check_focal_alpha(value)
        else:
            checked[key] = SPECS[key].check(key, value)
    bad_tags = [t for t in checked["tags"] if not isinstance(t, str)]
    if bad_tags:
        raise FerError(f"config key 'tags': expected a list of strings, got {checked['tags']!r}")
    _check_model(checked["model"], checked["model_args"])
    if checked["class_weight"] and checked["sampling"] == "balanced":
        raise FerError("config keys 'class_weight' and 'sampling': choose one way to balance classes")
    return checked


def _check_model(name, model_args):
    """The model is registered and takes every builder argument given."""
    from fer_keras.models.registry import check_hparams, get_builder

    try:
        get_builder(name)
    except ValueError as exc:
        raise FerError(f"config key 'model': {exc}") from None
    try:
        check_hparams(name, model_args)
    except ValueError as exc:
        raise FerError(f"config key 'model_args': {exc}") from None


def _check_focal_alpha(value):
    """focal_alpha: null, a non-negative number, 'balanced', or one weight per class."""
    from fer_keras.constants import NUM_CLASSES

    if value is None or value == "balanced":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if (
        isinstance(value, list)
        and len(value) == NUM_CLASSES
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return [float(v) for v in value]
    raise FerError(
        f"config key 'focal_alpha': expected null, a number >= 0, 'balanced' or a list of "
        f"{NUM_CLASSES} numbers, got {value!r}"
    )


def _check_keys(mapping, source):
    """Unknown keys fail with the closest known ones suggested."""
    for key in mapping:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(DEFAULTS)}"
            raise FerError(f"unknown config key {key!r} in {source}{hint}")
