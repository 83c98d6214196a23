"""One registry of model builders (timm style): `@register_model`, `build_model`, `list_models`."""

import inspect
import math

from fer_keras.errors import brief

_MODELS = {}


def register_model(fn):
    """Register a builder under its function name; its docstring's first line describes it."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models():
    """Names of every registered architecture, sorted."""
    return sorted(_MODELS)


def get_builder(name):
    """The builder registered as `name`; an unknown name lists the known ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def build_model(name, **hparams):
    """Build `name` with `hparams`; options left as None keep the builder's defaults.

    An option the builder does not take raises a ValueError naming the accepted ones.
    """
    hparams = check_hparams(name, {k: v for k, v in hparams.items() if v is not None})
    return get_builder(name)(**hparams)


# Builder options renamed, with what to say to a user of the old spelling.
RENAMED = {"weight_decay": "the builders' L2 penalty is now `l2` (e.g. --set l2=1e-4); `weight_decay` is the "
                           "optimizer's decoupled decay, a training option"}


def check_hparams(name, hparams):
    """`hparams` checked against builder `name`: every option known and of its default's kind (a
    number where the default is a number, a list of ints for a tuple of sizes), and returned. A ValueError names the option, what was expected and what was given."""
    accepted = default_hparams(name)
    renamed = sorted(set(hparams) & set(RENAMED) - set(accepted))
    if renamed:
        raise ValueError(f"model {name!r} has no hyperparameter {renamed[0]}: {RENAMED[renamed[0]]}")
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    return {key: _check_kind(name, key, value, accepted[key]) for key, value in hparams.items()}


def _check_kind(name, key, value, default):
    """`value` if it is of the kind of `default` (ints pass for floats; lists of ints for tuples)."""
    def number(v, kinds):
        return isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v)

    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = number(value, int), "an integer"
    elif isinstance(default, float):
        ok, expected = number(value, (int, float)), "a finite number"
    elif isinstance(default, tuple):
        ok, expected = isinstance(value, (list, tuple)) and all(number(v, int) for v in value), "a list of integers"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ValueError(f"model {name!r} hyperparameter {key}: expected {expected} "
                         f"(the default is {default!r}), got {brief(value)}")
    return value


def default_hparams(name):
    """The builder's keyword hyperparameters and their defaults."""
    params = inspect.signature(get_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def describe(name):
    """First line of the builder's docstring."""
    doc = inspect.getdoc(get_builder(name)) or ""
    return doc.splitlines()[0] if doc else ""
