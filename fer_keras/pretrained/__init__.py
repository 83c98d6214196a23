"""Trained models shipped inside the package, each with a card saying how it was made and how it scores.

`load()` gives the default model (the best single network), ready for `predict` and `explain`;
`python -m fer_keras.pretrained` prints the cards; `python -m fer_keras.pretrained add RUN ...` makes
a shipped model from a finished run folder (its best checkpoint, float32, without optimizer state).
"""

import json
from pathlib import Path

from fer_keras.errors import FerError

HERE = Path(__file__).resolve().parent
DEFAULT = "fer_cnn_d45_s5"  # the best single network shipped


def cards():
    """Every shipped model's card, by name (`<name>.json` beside `<name>.keras`)."""
    found = {}
    for path in sorted(HERE.glob("*.json")):
        if path.with_suffix(".keras").exists():
            found[path.stem] = json.loads(path.read_text())
    return found


def model_path(name=None):
    """The `.keras` file of shipped model `name` (default: `DEFAULT`)."""
    name = name or DEFAULT
    path = HERE / f"{name}.keras"
    if not path.exists() or not (HERE / f"{name}.json").exists():
        known = ", ".join(cards()) or "none"
        raise FerError(f"no shipped model {name!r} in {HERE} (shipped: {known})")
    return path


def load(name=None):
    """Shipped model `name` (default: the best single network) as a Keras model, loaded in safe mode."""
    from fer_keras.modelio.saving import load_keras_model

    return load_keras_model(model_path(name))


def describe(name=None):
    """One line naming a shipped model and its PublicTest accuracy, for CLIs that fall back on it."""
    name = name or DEFAULT
    card = cards()[name] if name in cards() else {}
    accuracy = card.get("publictest", {}).get("accuracy")
    score = f", {accuracy:.1%} PublicTest accuracy" if accuracy is not None else ""
    return f"no --model given: using the shipped model {name}{score} ({model_path(name)})"
