"""Options and config: the one option table, the generated flags of fer_keras.training.train and
tuning.search, the resolver (with a fuzzed command line), recipes, and the optimizer, schedule and
loss factories the options feed."""

import json

import keras
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fer_keras.training import config as config_lib
from fer_keras.training.config import OPTIONS, coerce, load_recipe, parse_assignments, resolve_config
from fer_keras.constants import NUM_CLASSES
from fer_keras.errors import FerError
from fer_keras.training.losses import build_loss
from fer_keras.core.runs import RESUMABLE
from fer_keras.training.choices import OPTIMIZERS
from fer_keras.training.optim import LinearWarmup, build_optimizer, learning_rate
from fer_keras.training.train import build_parser, main, overfit_config
from fer_keras.training.parts import build_compiled_model
from tuning import search


def resolve_cli(argv):
    """The config `python -m fer_keras.train ARGV` would train."""
    flags, config_file, assignments = config_lib.options_from_args(build_parser().parse_args(argv))
    return resolve_config(flags, config_file, assignments)


# --- the option table -----------------------------------------------------------------------------


def test_every_option_is_declared_once_with_a_valid_default():
    assert config_lib.DEFAULTS == {key: option.default for key, option in OPTIONS.items()}
    assert resolve_config() == {**config_lib.DEFAULTS, "data": None}
    for key, option in OPTIONS.items():
        assert option.help and option.validate(key, option.default) == option.default, key
    assert set(RESUMABLE) == {"strategy", "wandb", "wandb_project", "group", "tags", "name", "out"} <= set(OPTIONS)


def _flags(parser):
    return {a.dest: a.option_strings for a in parser._actions if a.option_strings and a.dest != "help"}


def test_train_and_search_flags_come_from_the_table():
    train_flags = _flags(build_parser())
    for key in OPTIONS:
        expected = ["--set"] if key == "model_args" else [f"--{key.replace('_', '-')}"]
        assert train_flags["set" if key == "model_args" else key][0] == expected[0], key
    search_flags = _flags(search.build_parser())
    base = {key for key in OPTIONS if key not in (*search.NOT_BASE_FLAGS, "model_args")}
    assert {key: search_flags[key] for key in base} == {key: train_flags[key] for key in base}
    # The search's own flags keep their names but never land in the base config.
    assert search_flags["search"] == ["--name"] and search_flags["searches"] == ["--out"]
    assert search_flags["models"] == ["--model"]


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for key, option in OPTIONS.items():
        flag = "--set" if key == "model_args" else f"--{key.replace('_', '-')}"
        assert flag in text and option.help.split()[0] in text, key


# --- resolution -----------------------------------------------------------------------------------


def test_resolution_order_defaults_recipe_file_set_flags(tmp_path):
    recipe = load_recipe("resnet_fer")
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump({
        "recipe": "resnet_fer", "schedule": "cosine", "learning_rate": 0.01, "epochs": 7,
        "model_args": {"dropout": 0.1},
    }))
    cfg = resolve_cli(["--config", str(config_file), "--set", "depth=1", "epochs=9", "learning_rate=0.5",
                       "--learning-rate", "2e-2"])
    assert cfg["recipe"] == "resnet_fer"
    assert cfg["early_stopping"] == recipe["early_stopping"] != config_lib.DEFAULTS["early_stopping"]
    assert cfg["schedule"] == "cosine" != recipe["schedule"]  # file over recipe
    assert cfg["epochs"] == 9  # --set over file
    assert cfg["learning_rate"] == 0.02  # flag over --set
    assert cfg["model_args"] == {"dropout": 0.1, "depth": 1}  # merged across layers
    assert cfg["momentum"] == config_lib.DEFAULTS["momentum"]
    # A later layer switching the model drops the builder arguments meant for the previous one.
    assert resolve_config({"recipe": "resnet_fer", "model": "tiny_cnn"}, config_file)["model_args"] == {}


def test_flags_are_read_as_their_option_types():
    cfg = resolve_cli([
        "--set", "dropout=0.3", "widths=[16, 32]", "--learning-rate", "1e-3", "--epochs", "3",
        "--nesterov", "--clipnorm", "none", "--tags", "a", "b", "--focal-alpha", "balanced",
        "--no-export", "--warmup-epochs", "2", "--name", "2024", "--class-weight", "null",
    ])
    assert cfg["model_args"] == {"dropout": 0.3, "widths": [16, 32]}
    assert (cfg["learning_rate"], cfg["epochs"], cfg["nesterov"], cfg["clipnorm"]) == (0.001, 3, True, None)
    assert cfg["tags"] == ["a", "b"] and cfg["focal_alpha"] == "balanced" and cfg["export"] is False
    assert cfg["warmup_epochs"] == 2.0 and isinstance(cfg["warmup_epochs"], float)
    assert cfg["name"] == "2024" and cfg["class_weight"] is None  # a name stays a string
    texts = ("7", "0.5", "true", "null", "adam", "[1, 2]")
    assert [coerce(t) for t in texts] == [7, 0.5, True, None, "adam", [1, 2]]
    assert parse_assignments(["dropout=0.3", "weight_decay=0.1"]) == {
        "weight_decay": 0.1, "model_args": {"dropout": 0.3}}
    with pytest.raises(FerError, match="KEY=VALUE"):
        parse_assignments(["dropout"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learnig_rate": 0.1}, "unknown config key 'learnig_rate'.*learning_rate"),
        ({"optimizer": "adamx"}, "'optimizer': expected one of adam, adamw, sgd, rmsprop, got 'adamx'"),
        ({"epochs": 1.5}, "'epochs': expected an integer >= 1, got 1.5"),
        ({"learning_rate": "fast"}, "'learning_rate': expected a finite number > 0, got 'fast'"),
        ({"learning_rate": float("inf")}, "'learning_rate': expected a finite number > 0, got inf"),
        ({"learning_rate": 0}, "'learning_rate': expected a finite number > 0, got 0"),
        ({"weight_decay": float("nan")}, "'weight_decay': expected a finite number >= 0"),
        ({"clipnorm": 0.0}, "'clipnorm': expected a finite number > 0 or null"),
        ({"ema": 1.0}, "'ema': expected a finite number > 0 and <= 0.99999 or null"),
        ({"focal_alpha": [1, 2]}, "'focal_alpha'"),
        ({"tags": ["a", 1]}, "'tags': expected a list of strings"),
        ({"class_weight": "balanced", "sampling": "balanced"}, "one way to balance"),
        ({"fold": 3, "folds": 3}, "'fold': 3 needs folds above it"),
        ({"fold": 0}, "'fold': 0 needs folds above it, got folds None"),
        ({"split": "random"}, "'split': expected one of usage, stratified"),
        ({"recipe": "nope"}, "unknown recipe 'nope'; known recipes: .*default"),
        ({"model_args": {"widht": 3}}, "model 'simple_cnn' has no hyperparameter widht; it takes: "),
        ({"model_args": {"dropout": "abc"}},
         r"model 'simple_cnn' hyperparameter dropout: expected a finite number \(the default is 0.0\), got 'abc'"),
        ({"model_args": {"widths": [32, "x"]}}, "hyperparameter widths: expected a list of integers"),
        ({"model_args": {"weight_decay": 1e-4}}, r"no hyperparameter weight_decay: .*now `l2`"),
    ],
)
def test_bad_config_fails_naming_the_key_and_what_was_expected(overrides, message):
    with pytest.raises(FerError, match=message):
        resolve_config(overrides)


def test_l2_is_the_builders_option_and_weight_decay_the_optimizers():
    cfg = resolve_cli(["--model", "deep_cnn", "--set", "l2=1e-4", "weight_decay=0.05", "--optimizer", "adamw"])
    assert cfg["model_args"] == {"l2": 1e-4} and cfg["weight_decay"] == 0.05
    model, _ = build_compiled_model(cfg, steps_per_epoch=10)
    assert len(model.losses) == 8  # one L2 penalty per conv kernel
    assert model.optimizer.weight_decay == 0.05
    search_base = search.base_config(search.build_parser().parse_args(
        ["--max-epochs", "1", "--name", "s", "--model", "deep_cnn", "--set", "l2=1e-4", "weight_decay=0.05"]))
    assert {k: search_base[k] for k in ("model_args", "weight_decay")} == {k: cfg[k] for k in ("model_args",
                                                                                           "weight_decay")}


def test_data_comes_from_the_flag_else_fer2013_csv(monkeypatch, tmp_path):
    monkeypatch.setenv(config_lib.DATA_ENV, str(tmp_path / "env.csv"))
    assert resolve_config()["data"] == str(tmp_path / "env.csv")
    assert resolve_config({"data": "given.csv"})["data"] == "given.csv"
    monkeypatch.delenv(config_lib.DATA_ENV)
    assert resolve_config()["data"] is None


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    for argv, message in [
        (["--config", str(bad)], "error: unknown config key 'epoch' in config file"),
        (["--model", "no_such_net"], "error: config key 'model': unknown model 'no_such_net'; known models: "),
        (["--learning-rate", "inf"], "error: config key 'learning_rate': expected a finite number > 0, got inf"),
        (["--set", "dropout=abc"], "error: config key 'model_args': model 'simple_cnn' hyperparameter dropout"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--print-config"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_print_config_shows_the_resolved_config(capsys):
    assert main(["--recipe", "default", "--epochs", "3", "--print-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == resolve_config({"recipe": "default", "epochs": 3})


_KEYS = st.one_of(st.sampled_from(sorted(OPTIONS)), st.sampled_from(["dropout", "widths", "l2", "weight_decay"]),
                  st.text(min_size=1, max_size=12))
_VALUES = st.one_of(
    st.text(max_size=12), st.integers().map(str), st.floats().map(repr),
    st.sampled_from(["null", "true", "inf", "-1", "[", "{a: [1", "[1, x]", "{}", "nan", "1e309", "adamw"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=4))
@example([("learning_rate", "inf")])
@example([("dropout", "abc")])
@example([("model_args", "{}")])
@example([("out", "x\x00y")])
def test_fuzzed_settings_resolve_or_fail_in_one_line(capsys, items):
    """Any --set KEY=VALUE: the resolved config, or exit 2 with one `error:` line; never a traceback."""
    argv = ["--print-config", "--set", *(f"{k}={v}" for k, v in items)]
    capsys.readouterr()  # what earlier examples printed
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    if code == 0:
        assert yaml.safe_load(out)["model"] and err == ""
    else:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)


# --- recipes and the overfit check -----------------------------------------------------------------


def test_recipes_are_documented_and_valid():
    names = config_lib.list_recipes()
    assert "default" in names and len(names) >= 6
    for name in names:
        text = (config_lib.RECIPES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# "), name
        assert f"python -m fer_keras.train --recipe {name}" in text, name
        resolve_config({"recipe": name})


def test_overfit_config_switches_regularisation_off():
    cfg = overfit_config(resolve_config({"recipe": "deep_cnn", "overfit_check": 32, "label_smoothing": 0.1,
                                         "model_args": {"l2": 1e-3}}))
    assert cfg["augment"] == "none" and cfg["class_weight"] is None and cfg["label_smoothing"] == 0.0
    assert cfg["model_args"] == {"spatial_dropout": 0.0, "dropout": 0.0, "l2": 0.0}


# --- optimizers, schedules, losses --------------------------------------------------------------


def lr_at(schedule, steps):
    return [float(schedule(s)) if callable(schedule) else schedule for s in steps]


@pytest.mark.parametrize(
    "schedule, expected",
    [  # steps 0, 5, 10, 20, 29 with 10 steps per epoch, 3 epochs, peak 0.1, 1 warm-up epoch
        ("constant", [0.0, 0.05, 0.1, 0.1, 0.1]),
        ("cosine", [0.0, 0.05, 0.1, 0.05, 0.1 * 0.5 * (1 + np.cos(np.pi * 19 / 20))]),
        ("cosine_restarts", [0.0, 0.05, 0.1, 0.1, 0.1 * 0.5 * (1 + np.cos(np.pi * 9 / 10))]),
    ],
)
def test_schedules_warm_up_linearly_then_follow_their_shape(schedule, expected):
    cfg = resolve_config({"schedule": schedule, "learning_rate": 0.1, "epochs": 3, "warmup_epochs": 1,
                          "restart_epochs": 1})
    assert lr_at(learning_rate(cfg, 10), [0, 5, 10, 20, 29]) == pytest.approx(expected, abs=1e-6)
    cold = resolve_config({**cfg, "warmup_epochs": 0.0})
    assert lr_at(learning_rate(cold, 10), [0])[0] == pytest.approx(0.1)


def test_keras_schedules_do_the_warm_up_where_they_can():
    def schedule(name):
        return learning_rate(resolve_config({"schedule": name, "warmup_epochs": 1}), 10)

    assert isinstance(schedule("cosine"), keras.optimizers.schedules.CosineDecay)
    assert isinstance(schedule("constant"), keras.optimizers.schedules.CosineDecay)
    warm_restarts = schedule("cosine_restarts")
    assert isinstance(warm_restarts, LinearWarmup)
    copy = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(warm_restarts))
    assert lr_at(copy, [3, 17, 33]) == pytest.approx(lr_at(warm_restarts, [3, 17, 33]))
    assert learning_rate(resolve_config({"learning_rate": 0.3}), 10) == 0.3  # constant, no warm-up


def test_plateau_warms_up_per_epoch_then_reduces_on_plateau():
    cfg = resolve_config({"schedule": "plateau", "learning_rate": 0.3, "warmup_epochs": 2, "plateau_factor": 0.2})
    assert learning_rate(cfg, 10) == 0.3
    _, (warmup, plateau) = build_compiled_model(resolve_config({**cfg, "model": "tiny_cnn"}), 10)
    assert [warmup.schedule(e, 0.123) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.123])
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.factor == 0.2
    assert build_compiled_model(resolve_config({"model": "tiny_cnn", "schedule": "cosine"}), 10)[1] == []


def test_optimizers_weight_decay_spares_biases_and_clipping():
    cfg = resolve_config({"optimizer": "adamw", "weight_decay": 0.5, "learning_rate": 0.1, "clipnorm": 1.0})
    optimizer = build_optimizer(cfg, 10)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.clipnorm == 1.0
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones(2, "float32"), name="bias")
    optimizer.apply_gradients([(np.zeros((2, 2), "float32"), kernel), (np.zeros(2, "float32"), bias)])
    np.testing.assert_allclose(kernel.numpy(), 0.95)  # decayed by lr * weight_decay
    np.testing.assert_allclose(bias.numpy(), 1.0)
    averaged = build_optimizer(resolve_config({"optimizer": "adamw", "ema": 0.999}), 10)
    assert averaged.use_ema and averaged.ema_momentum == 0.999 and not optimizer.use_ema
    sgd = build_optimizer(resolve_config({"optimizer": "sgd", "momentum": 0.8, "nesterov": True}), 10)
    assert sgd.momentum == 0.8 and sgd.nesterov
    # Weight decay 0 (the default) works with every optimizer, AdamW included: it trains a step.
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
               "rmsprop": keras.optimizers.RMSprop}
    assert set(OPTIMIZERS) == set(classes)
    for name, cls in classes.items():
        optimizer = build_optimizer(resolve_config({"optimizer": name, "learning_rate": 0.1}), 10)
        variable = keras.Variable(np.ones(2, "float32"), name="kernel")
        optimizer.apply_gradients([(np.ones(2, "float32"), variable)])
        assert type(optimizer) is cls and optimizer.weight_decay in (0.0, None)
        assert np.all(variable.numpy() < 1.0), name


def test_label_smoothing_and_focal_losses_on_one_hot():
    logits = np.array([[2.0, 0.5, -1.0, 0, 0, 0, 0], [0.1, 0.2, 3.0, 0, 0, 0, 0]], "float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[[0, 2]]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    smoothed = labels * 0.9 + 0.1 / NUM_CLASSES
    ce = build_loss(resolve_config({"label_smoothing": 0.1}))
    assert float(ce(labels, logits)) == pytest.approx(-(smoothed * np.log(probs)).sum(1).mean(), rel=1e-5)

    focal = build_loss(resolve_config({"loss": "focal", "focal_gamma": 2.0}))
    expected = -(labels * (1 - probs) ** 2 * np.log(probs)).sum(1).mean()  # alpha 1, not Keras' 0.25
    assert float(focal(labels, logits)) == pytest.approx(expected, rel=1e-5)

    train_labels = np.array([0] * 30 + [2] * 5 + [1, 3, 4, 5, 6] * 4)
    balanced = build_loss(resolve_config({"loss": "focal", "focal_alpha": "balanced"}), train_labels)
    alpha = np.array(balanced.alpha)
    assert alpha[0] < 1 < alpha[2] and np.mean(alpha[train_labels]) == pytest.approx(1.0)
    per_sample = -(labels * (1 - probs) ** 2 * np.log(probs)).sum(1)
    assert float(balanced(labels, logits)) == pytest.approx((alpha[[0, 2]] * per_sample).mean(), rel=1e-5)
    fixed = build_loss(resolve_config({"loss": "focal", "focal_alpha": 0.5}))
    assert float(fixed(labels, logits)) == pytest.approx(0.5 * expected, rel=1e-5)
    with pytest.raises(FerError, match="training labels"):
        build_loss(resolve_config({"loss": "focal", "focal_alpha": "balanced"}))
