"""Training configuration: every option declared once in `OPTIONS`, resolved as
defaults < recipe < config file < `--set` < flags.

The flags of `fer_keras.training.train` and `tuning.search` are generated from `OPTIONS` (`add_option_flags`),
and `resolve_config` is the one resolver behind both: a typo or a bad value fails before any data is
read, with the key and what was expected named.
"""

import argparse
import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from fer_keras.constants import NUM_CLASSES
from fer_keras.data.presets import PRESETS
from fer_keras.data.splits import SAMPLINGS, SPLIT_MODES
from fer_keras.errors import FerError, brief
from fer_keras.training.choices import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES
from fer_keras.training.tracking import MODES

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB
DATA_ENV = "FER2013_CSV"  # the labelled FER2013 file to train on when no `data` is given


@dataclass(frozen=True)
class Option:
    """One config key: default, help and accepted values.

    `low`/`high` are inclusive bounds, `above` an exclusive lower bound; numbers must be finite.
    `check` replaces the type test for keys that take several shapes. Which keys may change when a
    run resumes is the run folder's business (`fer_keras.core.runs.RESUMABLE`).
    """

    default: object
    help: str
    type: type = str
    choices: tuple = ()
    low: float = None
    high: float = None
    above: float = None
    optional: bool = False
    check: object = None

    def describe(self):
        """What is expected, for error messages."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = {int: "an integer", float: "a finite number", bool: "true or false",
                    list: "a list of strings", dict: "a mapping"}.get(self.type, "a string")
            bounds = [f">= {self.low:g}" if self.low is not None else "",
                      f"> {self.above:g}" if self.above is not None else "",
                      f"<= {self.high:g}" if self.high is not None else ""]
            if any(bounds):
                text += " " + " and ".join(b for b in bounds if b)
        return text + (" or null" if self.optional else "")

    def validate(self, key, value):
        """`value` converted to this option's type (an int where a float goes); FerError if it does not fit."""
        if value is None and self.optional:
            return None
        if self.check is not None:
            return self.check(key, value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        fits = isinstance(value, self.type) and not (self.type in (int, float) and isinstance(value, bool))
        if fits and self.type is float:
            fits = math.isfinite(value)
        if fits and self.type is list:
            fits = all(isinstance(v, str) for v in value)
        fits = fits and (
            (not self.choices or value in self.choices)
            and (self.low is None or value >= self.low)
            and (self.above is None or value > self.above)
            and (self.high is None or value <= self.high)
        )
        if not fits:
            raise FerError(f"config key {key!r}: expected {self.describe()}, got {brief(value)}")
        return value


def _focal_alpha(key, value):
    """focal_alpha: a non-negative number, 'balanced', or one weight per class."""
    if value == "balanced":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    if (
        isinstance(value, list)
        and len(value) == NUM_CLASSES
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in value)
    ):
        return [float(v) for v in value]
    raise FerError(f"config key {key!r}: expected null, a number >= 0, 'balanced' or a list of "
                   f"{NUM_CLASSES} numbers >= 0, got {brief(value)}")


OPTIONS = {
    # Data
    "data": Option(None, f"FER2013 CSV in any layout, plain or .gz (null: ${DATA_ENV} if set, else the "
                   "embedded synthetic data)", optional=True),
    "limit": Option(None, "use only N rows, sampled stratified by class and Usage with the seed", int, low=1,
                    optional=True),
    "val_fraction": Option(0.1, "validation share carved from Training (split stratified, or a file without "
                           "PublicTest)", float, above=0.0, high=0.9),
    "split": Option("usage", "usage: Training / PublicTest / PrivateTest as the file says; stratified: val "
                    "carved from Training by val_fraction, PublicTest and PrivateTest are test", choices=SPLIT_MODES),
    "folds": Option(None, "cross-validation: one run per fold of a stratified K-fold split of Training, "
                    "reported as mean +- std (null = off)", int, low=2, optional=True),
    "fold": Option(None, "with folds: train only this fold, 0-based (null = every fold in turn)", int, low=0,
                   optional=True),
    "drop_conflicts": Option(False, "drop the training faces whose image repeats in training with another label "
                             "(35 images on 96 rows of FER2013 Training)", bool),
    # Model
    "model": Option("simple_cnn", "registered architecture (python -m fer_keras.models lists them)"),
    "model_args": Option({}, "builder hyperparameters, e.g. {dropout: 0.3, l2: 1e-4} (flag: --set)", dict),
    # Augmentation
    "augment": Option("none", "augmentation preset", choices=PRESETS),
    "mixup": Option(0.0, "MixUp Beta alpha (0 = off)", float, low=0.0),
    "cutmix": Option(0.0, "CutMix Beta alpha (0 = off)", float, low=0.0, high=1.0),
    # Knowledge distillation
    "teacher": Option([], "distil from these models (run folders, .keras, SavedModel or .tflite files; several "
                      "are one ensemble): training targets blend each label with their flip-TTA probabilities",
                      list),
    "distill_weight": Option(0.5, "with teacher: the teachers' share of each training target", float, low=0.0,
                             high=1.0),
    "distill_temperature": Option(1.0, "with teacher: soften the teachers' probabilities by this temperature",
                                  float, above=0.0),
    # Optimisation
    "optimizer": Option("adam", "optimizer", choices=OPTIMIZERS),
    "learning_rate": Option(1e-3, "peak learning rate", float, above=0.0),
    "weight_decay": Option(0.0, "decoupled weight decay of the optimizer (biases and norms excluded); the "
                           "builders' L2 penalty is the model option l2 (--set l2=...)", float, low=0.0),
    "momentum": Option(0.9, "SGD momentum", float, low=0.0, high=1.0),
    "nesterov": Option(False, "SGD Nesterov momentum", bool),
    "clipnorm": Option(None, "clip each gradient to this norm (null = off)", float, above=0.0, optional=True),
    "ema": Option(None, "keep an exponential moving average of the weights with this momentum (e.g. 0.999; "
                  "null = off): validation, the best checkpoint and the final model use the averaged weights",
                  float, above=0.0, high=0.99999, optional=True),
    "batch_size": Option(64, "global batch size", int, low=1),
    "epochs": Option(10, "number of epochs", int, low=1),
    "schedule": Option("constant", "learning-rate schedule", choices=SCHEDULES),
    "restart_epochs": Option(10, "cosine_restarts period in epochs", int, low=1),
    "plateau_factor": Option(0.5, "plateau: multiply the rate by this when val_loss stalls", float, above=0.0,
                             high=1.0),
    "plateau_patience": Option(3, "plateau: epochs without val_loss improvement before reducing", int, low=0),
    "warmup_epochs": Option(0.0, "linear warm-up length in epochs (0 = off)", float, low=0.0),
    # Loss and class balance
    "loss": Option("crossentropy", "loss function", choices=LOSSES),
    "label_smoothing": Option(0.0, "cross-entropy label smoothing", float, low=0.0, high=0.99),
    "focal_gamma": Option(2.0, "focal loss focusing parameter gamma", float, low=0.0),
    "focal_alpha": Option(None, "focal loss alpha: null (1), a number, 'balanced' or a list of 7 class weights",
                          optional=True, check=_focal_alpha),
    "class_weight": Option(None, "weigh each sample by its class's balanced weight (Keras fit class_weight), "
                           "or null", choices=("balanced",), optional=True),
    "sampling": Option("shuffle", "shuffle, or balanced (classes drawn uniformly)", choices=SAMPLINGS),
    "early_stopping": Option(None, "stop after this many epochs without val_accuracy gain (null = off)", int,
                             low=1, optional=True),
    # Execution
    "precision": Option("float32", "dtype policy (auto: mixed_bfloat16 where the hardware computes bfloat16 "
                        "natively, else float32)", choices=PRECISIONS),
    "seed": Option(0, "seed of every random thing (weights, shuffling, augmentation, splits)", int, low=0),
    "strategy": Option("default", "tf.distribute strategy: one device, all local GPUs (mirrored), or the "
                       "TF_CONFIG cluster (multi_worker)", choices=STRATEGIES),
    # Tracking and outputs
    "wandb": Option("auto", "W&B mode (auto: online if an API key is configured, else offline)", choices=MODES),
    "wandb_project": Option("fer_keras", "W&B project"),
    "group": Option(None, "W&B group", optional=True),
    "tags": Option([], "W&B tags", list),
    "name": Option(None, "W&B run name", optional=True),
    "out": Option(None, "run folder (null: runs/<model>-<timestamp>); rerun with the same one to resume",
                  optional=True),
    "recipe": Option(None, "named recipe (fer_keras/recipes/NAME.yaml) under the config file and flags",
                     optional=True),
    "overfit_check": Option(None, "sanity check: train on N samples without regularisation, report 100% or not",
                            int, low=1, optional=True),
    "export": Option(True, "write a SavedModel of the best checkpoint to <out>/savedmodel at the end", bool),
}
DEFAULTS = {key: option.default for key, option in OPTIONS.items()}


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
            raise FerError(f"cannot parse {text!r}: {' '.join(str(exc).split())}") from None
    return text


def parse_assignments(items):
    """`--set` items as a config layer: training options at the top, anything else a builder
    hyperparameter in `model_args` (`["dropout=0.3", "epochs=5"]` -> `{"epochs": 5, "model_args":
    {"dropout": 0.3}}`); values through `coerce`."""
    layer = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FerError(f"--set expects KEY=VALUE, got {item!r}")
        if key == "model_args":
            raise FerError("--set model_args=...: set builder hyperparameters one by one, e.g. --set dropout=0.3")
        if key in OPTIONS:
            layer[key] = option_value(key, value.strip())
        else:
            layer.setdefault("model_args", {})[key] = coerce(value.strip())
    return layer


def option_value(key, text):
    """A command-line string as the value of option `key`: strings stay strings (a run named '2024'),
    'null' is None where null is allowed, everything else goes through `coerce`."""
    option = OPTIONS[key]
    if option.type is str and option.check is None:
        return None if option.optional and text.strip().lower() in ("null", "none", "~") else text
    return coerce(text)


def add_option_flags(parser, exclude=()):
    """Add `--config`, `--set` and one flag per option (`--learning-rate`) to `parser`, except the
    keys in `exclude`; unset flags stay out of the namespace (see `options_from_args`)."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="JSON or YAML file of config keys")
    parser.add_argument(
        "--set", metavar="KEY=VALUE", nargs="+", action="extend", default=argparse.SUPPRESS,
        help="any config key or builder hyperparameter, e.g. --set dropout=0.3 l2=1e-4 schedule=cosine",
    )
    for key, option in OPTIONS.items():
        if key == "model_args" or key in exclude:
            continue
        flag = "--" + key.replace("_", "-")
        help_text = f"{option.help} (default: {option.default})".replace("%", "%%")
        if key == "recipe":
            help_text += f"; one of: {', '.join(list_recipes())}"
        common = {"default": argparse.SUPPRESS, "help": help_text, "dest": key}
        if option.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif option.type is list:
            parser.add_argument(flag, nargs="*", metavar=key.upper(), **common)
        elif option.choices and not option.optional:
            parser.add_argument(flag, choices=option.choices, metavar="{" + ",".join(option.choices) + "}",
                                **common)
        else:
            parser.add_argument(flag, type=str, metavar=key.upper(), **common)
    return parser


def options_from_args(args):
    """The config layers a parsed command line gives: `(flags, config_file, assignments)`, ready for
    `resolve_config`. Flag values are read like `--set` values ('1e-3', 'null')."""
    values = dict(vars(args))
    config_file = values.pop("config", None)
    assignments = parse_assignments(values.pop("set", None))
    flags = {key: option_value(key, v) if isinstance(v, str) else v for key, v in values.items() if key in OPTIONS}
    return flags, config_file, assignments


def read_config_text(path, what="config file"):
    """The text of a config-like file, at most MAX_CONFIG_BYTES (`--config /dev/zero` must not fill memory)."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise FerError(f"{what} {path} is over {MAX_CONFIG_BYTES:,} bytes: not a {what}")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise FerError(f"{what} {path} is not a text file") from None


def load_config_file(path):
    """A JSON or YAML mapping of config keys (YAML is a superset of JSON, so one parser reads both)."""
    path = Path(path)
    try:
        content = yaml.safe_load(read_config_text(path))
    except yaml.YAMLError as exc:
        raise FerError(f"config file {path} is not valid JSON/YAML: {' '.join(str(exc).split())}") from None
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
    if not isinstance(name, str) or not path.is_file():
        raise FerError(f"unknown recipe {name!r}; known recipes: {', '.join(list_recipes())}")
    return {**load_config_file(path), "recipe": name}


def resolve_config(overrides=None, config_file=None, assignments=None):
    """DEFAULTS < recipe < `config_file` (a path, or a mapping) < `assignments` (`--set`) < `overrides`
    (flags), validated.

    The recipe is the one the highest layer names. `model_args` merge key by key across the layers
    (`--set dropout=0.3` keeps the recipe's other builder arguments), except that a layer switching
    to another model starts them afresh. With no `data` anywhere, `$FER2013_CSV` names it.
    """
    overrides, assignments = dict(overrides or {}), dict(assignments or {})
    _check_keys(overrides, "overrides")
    _check_keys(assignments, "--set")
    if isinstance(config_file, dict):  # a layer given as a mapping (a study's shared settings)
        _check_keys(config_file, "config layer")
        file_cfg = dict(config_file)
    else:
        file_cfg = load_config_file(config_file) if config_file else {}
    # The command line is one layer: flags over --set, and --set builder arguments go with --model.
    command_line = {**assignments, **overrides}
    command_line["model_args"] = {**(assignments.get("model_args") or {}), **(overrides.get("model_args") or {})}
    recipe = command_line.get("recipe") or file_cfg.get("recipe")
    cfg = {}
    for layer in (DEFAULTS, load_recipe(recipe) if recipe else {}, file_cfg, command_line):
        switches_model = layer.get("model", cfg.get("model")) != cfg.get("model")
        model_args = {} if switches_model else cfg.get("model_args", {})
        cfg.update(layer)
        layer_args = layer.get("model_args") or {}
        if not isinstance(layer_args, dict):
            raise FerError(f"config key 'model_args': expected a mapping, got {brief(layer_args)}")
        cfg["model_args"] = {**model_args, **layer_args}
    if cfg["data"] is None and os.environ.get(DATA_ENV):
        cfg["data"] = os.environ[DATA_ENV]
    return validate(cfg)


def validate(cfg):
    """A checked copy of `cfg`: every key known and every value in range (ints widened to floats)."""
    _check_keys(cfg, "config")
    missing = sorted(set(OPTIONS) - set(cfg))
    if missing:
        raise FerError(f"config lacks keys: {', '.join(missing)}")
    checked = {key: OPTIONS[key].validate(key, value) for key, value in cfg.items()}
    checked["model_args"] = _check_model(checked["model"], checked["model_args"])
    if checked["fold"] is not None and (checked["folds"] is None or checked["fold"] >= checked["folds"]):
        raise FerError(f"config key 'fold': {checked['fold']} needs folds above it, got folds {checked['folds']}")
    if checked["class_weight"] and checked["sampling"] == "balanced":
        raise FerError("config keys 'class_weight' and 'sampling': choose one way to balance classes")
    return checked


def _check_model(name, model_args):
    """The model is registered and takes every builder argument given, each of the right kind."""
    from fer_keras.models.registry import check_hparams, get_builder

    try:
        get_builder(name)
    except ValueError as exc:
        raise FerError(f"config key 'model': {exc}") from None
    try:
        return check_hparams(name, model_args)
    except ValueError as exc:
        raise FerError(f"config key 'model_args': {exc}") from None


def _check_keys(mapping, source):
    """Unknown keys fail with the closest known ones suggested."""
    for key in mapping:
        if key not in OPTIONS:
            close = difflib.get_close_matches(str(key), OPTIONS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(OPTIONS)}"
            raise FerError(f"unknown config key {brief(key)} in {source}{hint}")
