"""One registry of model builders (timm style): `@register_model`, `build_model`, `list_models`."""

import inspect

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
    hparams = {k: v for k, v in hparams.items() if v is not None}
    check_hparams(name, hparams)
    return get_builder(name)(**hparams)


def check_hparams(name, hparams):
    """Raise a ValueError naming any of `hparams` that builder `name` does not take."""
    accepted = default_hparams(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )


def default_hparams(name):
    """The builder's keyword hyperparameters and their defaults."""
    params = inspect.signature(get_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def describe(name):
    """First line of the builder's docstring."""
    doc = inspect.getdoc(get_builder(name)) or ""
    return doc.splitlines()[0] if doc else ""
