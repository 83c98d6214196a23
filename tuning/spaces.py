"""Search spaces: which hyperparameters a search varies around a base training config.

The only module with `hp.*` calls. A hyperparameter is named after what it sets: a training config
key (`learning_rate`, `optimizer`, ...) or a builder's own keyword (`dropout`, `widths`, ...), so a
trial's values map one to one onto a config that `python -m fer_keras.train` accepts. Everything not
searched keeps the base config's value; each searched value defaults to it too.
"""

import itertools
from dataclasses import asdict, dataclass

from fer_keras.core.runs import RESUMABLE
from fer_keras.training import config as config_lib
from fer_keras.errors import FerError
from fer_keras.models import default_hparams, list_models
from fer_keras.models.registry import check_hparams
from fer_keras.training.choices import OPTIMIZERS

# Training-config dimensions: candidate values (the base value is always added).
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
LABEL_SMOOTHINGS = (0.0, 0.05, 0.1, 0.2)
BATCH_SIZES = (32, 64, 128, 256)
AUGMENTS = ("none", "light", "strong")  # the general presets (a project's own preset: --grid augment=...)
LEARNING_RATE_RANGE = (1e-4, 1e-2)
TRAINING_DIMS = ("learning_rate", "optimizer", "weight_decay", "label_smoothing", "augment", "batch_size")

# Builder dimensions: dropouts, stage widths and depth, scalar widths.
DROPOUTS = tuple(round(0.1 * i, 1) for i in range(8))
WIDTH_SCALES = (0.5, 1.0, 2.0)
MAX_STAGES = 4  # 48x48 inputs halve per stage: a fifth stage added by the search could reach 1x1
SCALAR_WIDTHS = ("width", "stem_width", "mlp_dim")


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: `hp.<kind>(name, **args)`."""

    name: str
    kind: str
    args: dict


def encode_units(units):
    """A tuple of layer sizes as a Choice value: (32, 64) -> "32,64"."""
    return ",".join(str(u) for u in units)


def decode_units(text):
    """Inverse of `encode_units`: "32,64" -> (32, 64), "" -> ()."""
    return tuple(int(u) for u in text.split(",") if u)


def _choice(name, candidates, base):
    """A Choice over `candidates` plus `base` (its default), without repeats; numbers sorted."""
    values = list(dict.fromkeys([*candidates, base]))
    if all(isinstance(v, (int, float)) for v in values):
        values.sort()
    return Dim(name, "Choice", {"values": values, "default": base})


def _scaled(units, scale):
    return tuple(max(4, round(u * scale)) for u in units)


def _stage_variants(widths):
    """Stage widths one stage shallower, as deep, one stage deeper (up to MAX_STAGES), each
    scaled by WIDTH_SCALES."""
    depths = [widths[:-1]] if len(widths) > 1 else []
    depths.append(widths)
    if len(widths) < MAX_STAGES:
        depths.append((*widths, 2 * widths[-1]))
    return [_scaled(d, s) for d in depths for s in WIDTH_SCALES]


def training_dims(base):
    """The training-config dimensions around `base`."""
    low, high = LEARNING_RATE_RANGE
    lr = base["learning_rate"]
    return {
        "learning_rate": Dim("learning_rate", "Float", {
            "min_value": min(low, lr), "max_value": max(high, lr), "sampling": "log", "default": lr}),
        "optimizer": _choice("optimizer", OPTIMIZERS, base["optimizer"]),
        "weight_decay": _choice("weight_decay", WEIGHT_DECAYS, base["weight_decay"]),
        "label_smoothing": _choice("label_smoothing", LABEL_SMOOTHINGS, base["label_smoothing"]),
        "augment": _choice("augment", AUGMENTS, base["augment"]),
        "batch_size": _choice("batch_size", BATCH_SIZES, base["batch_size"]),
    }


def builder_dims(model, model_args=None):
    """The dimensions of `model`'s builder that a search varies: every `*dropout`, `widths`,
    `dense_units`, `depth` and scalar width it has, around its defaults (overridden by
    `model_args`). Its `l2` penalty is not searched: the optimizer's decoupled `weight_decay` is."""
    base = {**default_hparams(model), **(model_args or {})}
    dims = {}
    for name, value in base.items():
        if name.endswith("dropout"):
            dims[name] = _choice(name, DROPOUTS, value)
        elif name == "widths":
            dims[name] = _choice(name, map(encode_units, _stage_variants(tuple(value))), encode_units(value))
        elif name == "dense_units" and value:
            variants = (encode_units(_scaled(value, s)) for s in WIDTH_SCALES)
            dims[name] = _choice(name, variants, encode_units(value))
        elif name == "depth":
            dims[name] = Dim(name, "Int", {"min_value": 1, "max_value": max(2, 2 * value), "default": value})
        elif name in SCALAR_WIDTHS:
            dims[name] = _choice(name, (value // 2, 2 * value), value)
    return dims


# Options a grid may not vary: they name, track or place a run, or are not training settings.
NOT_GRID = (*RESUMABLE, "model_args", "recipe", "overfit_check", "export", "data")


def names_variants(variants, grid):
    """Whether a series' runs carry a `variant` dimension: several variants, or one named variant alone
    (a lone variant with a grid beside it is just the base of that grid)."""
    return len(variants) > 1 or bool(variants and not grid)


def grid_dims(base, grid, models):
    """Grid dimensions from exact values: training options (checked like the config) or builder
    hyperparameters that every candidate model takes (list values, like widths, as "32,64")."""
    dims = {}
    for key, values in grid.items():
        if not values:
            raise FerError(f"--grid {key}: give at least one value")
        if key in NOT_GRID:
            raise FerError(f"--grid {key}: {key} is not a training setting a grid can vary")
        if key in config_lib.OPTIONS:
            values = [config_lib.OPTIONS[key].validate(key, v) for v in values]
            if key == "model":
                for name in values:
                    config_lib.validate({**base, "model": name, "model_args": {}})
        else:
            try:
                for model, value in itertools.product(models, values):
                    check_hparams(model, {key: value})
            except ValueError as exc:
                raise FerError(f"--grid {key}: {exc}") from None
            values = [encode_units(v) if isinstance(v, (list, tuple)) else v for v in values]
        dims[key] = Dim(key, "Choice", {"values": list(dict.fromkeys(values)), "default": values[0]})
    return dims


class SearchSpace:
    """The searched dimensions around a base config (resolved, so valid), and the trial config they make.

    `models`: the candidate architectures; several make `model` a dimension, and then the builders
    keep their own defaults. `only`: restrict the search to these dimensions (a one-dimension
    series such as `["learning_rate"]`); the others keep the base value. `grid`: exact values per
    key instead ({"learning_rate": [1e-4, 1e-3], "model": [...]}), for a grid search.
    """

    def __init__(self, base, models=None, only=None, grid=None):
        self.base = base
        if grid:
            if len(models or ()) > 1 or only:
                raise FerError("--grid gives the searched values itself: use it without several --model or --only")
            models = grid.get("model", models)
        self.models = list(dict.fromkeys(models or [self.base["model"]]))
        unknown = sorted(set(self.models) - set(list_models()))
        if unknown:
            raise FerError(f"unknown model {', '.join(unknown)}; known models: {', '.join(list_models())}")
        if self.base["model"] != self.models[0]:
            raise FerError(f"the base config's model {self.base['model']!r} must be the first candidate")
        if grid:
            self.dims = grid_dims(self.base, grid, self.models)
            return
        available = training_dims(self.base)
        if len(self.models) > 1:
            available = {"model": _choice("model", self.models, self.models[0]), **available}
        else:
            available = {**builder_dims(self.models[0], self.base["model_args"]), **available}
        self.dims = _select(available, only, several_models=len(self.models) > 1)

    def declare(self, hp):
        """Register the dimensions on `hp`; return their values for this trial."""
        return {d.name: getattr(hp, d.kind)(d.name, **d.args) for d in self.dims.values()}

    def defaults(self):
        """Every dimension's default value (the base config's)."""
        return {d.name: d.args["default"] for d in self.dims.values()}

    def trial_config(self, values, epochs):
        """The full training config of a trial: the base config with `values` (missing ones at
        their defaults) in place and `epochs` epochs."""
        values = {**self.defaults(), **{k: v for k, v in values.items() if k in self.dims}}
        cfg = dict(self.base, epochs=int(epochs))
        model = values.pop("model", cfg["model"])
        model_args = dict(cfg["model_args"]) if model == cfg["model"] else {}
        tuples = {k for k, v in default_hparams(model).items() if isinstance(v, tuple)}
        for name, value in values.items():
            if name in config_lib.DEFAULTS:
                cfg[name] = value
            else:
                model_args[name] = decode_units(value) if name in tuples else value
        cfg.update(model=model, model_args=model_args)
        return config_lib.validate(cfg)

    def to_json(self):
        """A JSON-able description (base config, candidate models, dimensions)."""
        return {"base": self.base, "models": self.models,
                "dims": [asdict(d) for d in self.dims.values()]}

    @classmethod
    def from_json(cls, data):
        """The space described by `to_json` output (its dimensions as saved, not recomputed)."""
        if "variants" in data:
            return VariantSpace(data["layer"], data["variants"], data["fixed"], dims=data["dims"])
        space = cls.__new__(cls)
        space.base = config_lib.validate(data["base"])
        space.models = list(data["models"])
        space.dims = {d["name"]: Dim(d["name"], d["kind"], d["args"]) for d in data["dims"]}
        return space


class VariantSpace(SearchSpace):
    """A study series: named variants, each a config layer of its own (a network with its own recipe),
    times exact `grid` values and `repeats` seeds, over a study-wide `layer`; `fixed` (the budget's
    data limit) goes over every variant.

    A trial's config resolves like `fer_keras.training.train`'s, with the study layer as the config file and
    the variant, the fixed keys, its grid values and its seed on the command line.
    """

    def __init__(self, layer, variants, fixed=None, grid=None, repeats=1, dims=None):
        self.layer, self.variants, self.fixed = dict(layer), dict(variants or {"": {}}), dict(fixed or {})
        first = self._resolve(next(iter(self.variants)), {})
        self.base, self.models = first, list(dict.fromkeys(
            self._resolve(name, {})["model"] for name in self.variants))
        if dims is not None:
            self.dims = {d["name"]: Dim(d["name"], d["kind"], d["args"]) for d in dims}
            return
        self.dims = {}
        if names_variants(variants or {}, grid):
            self.dims["variant"] = Dim("variant", "Choice", {"values": list(self.variants), "default": next(iter(
                self.variants))})
        self.dims.update(grid_dims(first, grid or {}, self.models))
        if repeats > 1:
            seeds = [first["seed"] + i for i in range(repeats)]
            self.dims["seed"] = Dim("seed", "Choice", {"values": seeds, "default": seeds[0]})

    def _resolve(self, variant, values):
        """The config of `variant` with `values` (option keys or builder hyperparameters) on top."""
        options = {k: v for k, v in values.items() if k in config_lib.OPTIONS}
        builder = {k: v for k, v in values.items() if k not in config_lib.OPTIONS}
        overrides = {**self.variants[variant], **self.fixed, **options}
        if builder:
            overrides["model_args"] = {**(overrides.get("model_args") or {}), **builder}
        return config_lib.resolve_config(overrides, self.layer)

    def trial_config(self, values, epochs):
        values = {**self.defaults(), **{k: v for k, v in values.items() if k in self.dims}}
        variant = values.pop("variant", next(iter(self.variants)))
        model = {**self.layer, **self.variants[variant]}.get("model", self.base["model"])
        tuples = {k for k, v in default_hparams(model).items() if isinstance(v, tuple)}
        values = {k: decode_units(v) if k in tuples else v for k, v in values.items()}
        return self._resolve(variant, {**values, "epochs": int(epochs)})

    def to_json(self):
        return {**super().to_json(), "layer": self.layer, "variants": self.variants, "fixed": self.fixed}


def _select(available, only, several_models):
    """`available` restricted to `only` (all of them when `only` is empty), checked."""
    if not only:
        return available
    unknown = [name for name in only if name not in available]
    if unknown:
        raise FerError(
            f"cannot search {', '.join(unknown)}: searchable here are {', '.join(available)}"
            + (" (builder hyperparameters only with a single --model)" if several_models else "")
        )
    if several_models and "model" not in only:
        raise FerError("several --model candidates: add `model` to --only, or give one --model")
    return {name: available[name] for name in available if name in only}
