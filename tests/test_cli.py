"""What every command shares: a bad model file or `--out` is one `error:` line and exit status 2 (nothing
written, nothing lost), Ctrl-C is one line and 130, entry points return their status."""

import configparser
import importlib
import inspect
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

from fer_keras.data import augment

from fer_keras.evaluation import evaluate

from fer_keras.evaluation import explain

from fer_keras.modelio import export

from fer_keras.inference import predict
from fer_keras.core.cli import user_errors
from fer_keras.data import __main__ as data_cli
from fer_keras.data.synthetic import write_synthetic_csv
from fer_keras.errors import FerError
from fer_keras.models import build_model

REPO = Path(__file__).resolve().parent.parent

# Command -> (main, argv for a model, a dataset and an output path).
MODEL_COMMANDS = {
    "predict": (predict.main, lambda model, data, out: ["--model", model, "--csv", data, "--out", out]),
    "evaluate": (evaluate.main, lambda model, data, out: [model, "--split", "test", "--data", data, "--out", out]),
    "export": (export.main, lambda model, data, out: [model, "--out", out]),
    "explain": (explain.main, lambda model, data, out: ["--model", model, "--data", data, "--n", "2", "--out", out]),
}
# Command -> (main, argv, whether --out names a folder).
OUT_COMMANDS = {
    **{name: (main, argv, name in ("evaluate", "export")) for name, (main, argv) in MODEL_COMMANDS.items()},
    "data stats": (data_cli.main, lambda model, data, out: ["stats", data, "--out", out], True),
    "augment preview": (augment.main, lambda model, data, out: ["preview", "--preset", "light", "--data", data,
                                                                  "--n", "2", "--out", out], False),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A run folder with a tiny model.keras, a small dataset, and bad model files of every kind."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    run.mkdir()
    build_model("tiny_cnn").save(run / "model.keras")
    data = root / "faces.csv"
    write_synthetic_csv(data, n=70, seed=0)
    good = (run / "model.keras").read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "model.keras").write_bytes(good[:100_000])  # like `head -c 100000 RUN/model.keras`
    (root / "random.keras").write_bytes(bytes(range(256)) * 40)
    inputs = keras.Input((48, 48, 1))
    outputs = keras.layers.Dense(7)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x / 255)(inputs)))
    keras.Model(inputs, outputs).save(root / "lambda.keras")
    return {"root": root, "run": run, "data": data}


def _fails(main, argv, capsys):
    """Run a command that must fail: its one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("model, says", [
    pytest.param("bad", "bad/model.keras is not a readable Keras model file (corrupt or truncated: not a zip "
                 "archive)", id="truncated"),
    pytest.param("random.keras", "random.keras is not a readable Keras model file (corrupt or truncated: not a "
                 "zip archive)", id="random"),
    pytest.param("lambda.keras", "lambda.keras holds Python code (a Lambda layer) and is not loaded in safe mode",
                 id="lambda"),
])
def test_bad_model_file_is_one_error_line(command, model, says, files, tmp_path, capsys):
    main, argv = MODEL_COMMANDS[command]
    line = _fails(main, argv(str(files["root"] / model), str(files["data"]), str(tmp_path / "out")), capsys)
    assert line.startswith(f"error: {files['root'] / says}"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", OUT_COMMANDS)
@pytest.mark.parametrize("where", ["under_a_file", "wrong_kind"])
def test_bad_out_is_one_error_line_and_nothing_is_lost(command, where, files, tmp_path, capsys):
    main, argv, folder = OUT_COMMANDS[command]
    note = tmp_path / "notes.txt"
    note.write_text("keep me")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.txt").write_text("keep me too")
    if where == "under_a_file":
        out, says = note / "x.out", f"cannot be created: {note} is a file"
    elif folder:
        out, says = note, "is a file; expected a folder"
    else:
        out, says = tmp_path / "photos", "is a folder; expected a file name"
    line = _fails(main, argv(str(files["run"]), str(files["data"]), str(out)), capsys)
    assert line == f"error: {out}: {says}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]
    assert note.read_text() == "keep me" and [p.name for p in (tmp_path / "photos").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("command, default_out", [("evaluate", "eval-test"), ("export", "savedmodel")])
def test_default_output_folder_that_is_a_file(command, default_out, files, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes((files["run"] / "model.keras").read_bytes())
    (run / default_out).write_text("in the way")
    argv = MODEL_COMMANDS[command][1](str(run), str(files["data"]), "unused")
    line = _fails(MODEL_COMMANDS[command][0], argv[: argv.index("--out")], capsys)
    assert line == f"error: {run / default_out}: is a file; expected a folder"
    assert (run / default_out).read_text() == "in the way"


def test_data_stats_writes_charts_only_where_out_names(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gz = tmp_path / "data" / "fer2013.csv.gz"
    gz.parent.mkdir()
    write_synthetic_csv(gz, n=70, seed=0)
    assert data_cli.main(["stats", str(gz)]) == 0
    assert "no charts written: --out DIR" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert data_cli.main(["stats", str(gz), "--out", "charts"]) == 0
    assert "charts written to charts/" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["class_distribution.png", "samples.png"]


def test_os_errors_and_multiline_messages_are_one_line(tmp_path, capsys):
    @user_errors
    def reads_a_missing_file(argv=None):
        return (tmp_path / "missing" / "x.csv").read_text()

    @user_errors
    def says_two_lines(argv=None):
        raise FerError("first\nsecond")

    assert _fails(reads_a_missing_file, None, capsys) == f"error: {tmp_path / 'missing' / 'x.csv'}: " \
                                                          "No such file or directory"
    assert _fails(says_two_lines, None, capsys) == "error: first second"


# Decorates a `main` that waits for Ctrl-C; argv[1] is the decorator's `interrupted` message, or none.
WAITS_FOR_CTRL_C = textwrap.dedent(
    """
    import sys, time
    from fer_keras.core.cli import user_errors

    decorate = user_errors(interrupted=sys.argv[1]) if len(sys.argv) > 1 else user_errors

    @decorate
    def main(argv=None):
        print("ready", flush=True)
        time.sleep(60)
        return 0

    raise SystemExit(main())
    """
)


@pytest.mark.parametrize("message", [None, "interrupted: run the same command again to resume"])
def test_ctrl_c_is_one_line_and_exit_status_130(message):
    proc = subprocess.Popen([sys.executable, "-c", WAITS_FOR_CTRL_C, *([message] if message else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err == f"{message or 'interrupted'}\n"


def _console_scripts():
    """`module:main` of every console script in setup.cfg."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return [line.split("=")[1].strip() for line in lines]


def _main(target):
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    return module, getattr(module, function)


@pytest.mark.parametrize("target", _console_scripts() + ["tuning.summary:main"])
def test_entry_points_report_errors_and_exit_with_main_s_status(target):
    module, main = _main(target)
    assert hasattr(main, "__wrapped__"), f"{target} is not wrapped by cli.user_errors"
    assert inspect.getsource(module).rstrip().endswith('if __name__ == "__main__":\n    raise SystemExit(main())')


@pytest.mark.parametrize("target", _console_scripts())
def test_a_bad_flag_is_one_error_line_pointing_at_help(target, capsys):
    line = _fails(_main(target)[1], ["--no-such-flag"], capsys)
    assert line.startswith("error: ") and line.endswith(" --help)"), line
