"""`python -m fer_keras.pretrained` prints the shipped models' cards;
`python -m fer_keras.pretrained add RUN --name NAME --command "..." [--data PATH]` ships a run's model."""

import shlex
import sys
from pathlib import Path


from fer_keras import pretrained
from fer_keras.core import runs
from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.constants import CLASS_NAMES
from fer_keras.errors import FerError
from fer_keras.core.io import atomic_path, write_json

DATA_NOTE = ("FER2013 (Goodfellow et al., 2013, https://arxiv.org/abs/1307.0414), Training rows; selected on "
             "PublicTest. FER2013 is distributed for research use: check its terms before any other use.")


def format_card(name, card):
    """A card as the text `python -m fer_keras.pretrained` prints."""
    test, train = card["publictest"], card["training"]
    recall = " / ".join(f"{c} {card['publictest']['recall'][c]:.2f}" for c in CLASS_NAMES)
    tta = f" ({test['accuracy_tta']:.2%} with flip TTA)" if test.get("accuracy_tta") is not None else ""
    lines = [
        f"{name}{' (default)' if name == pretrained.DEFAULT else ''}: {card['description']}",
        f"  model: {card['model']} {card['model_args'] or ''}, {card['params']:,} parameters, "
        f"{card['size_bytes'] / 1e6:.1f} MB",
        f"  recipe: {card['recipe']}; trained by: {card['command']}",
        f"  training: {train['epochs']} epochs (best {train['best_epoch']}) in {train['minutes']:.0f} min "
        f"on {train['machine']}",
        f"  data: {card['data']}",
        f"  PublicTest: accuracy {test['accuracy']:.2%}{tta}, macro F1 {test['macro_f1']:.3f}",
        f"  recall: {recall}",
        f"  shipped by: {card['shipped_by']}",
    ]
    return "\n".join(lines)


def add(run_dir, name, command, description, data=None, shipped_by=None, machine=None):
    """Ship the best checkpoint of finished run `run_dir` as `name`, with its card; return the card.
    `shipped_by`: the command line that ships it, recorded on the card; `machine`: what it trained
    on (default: what the run recorded)."""
    from fer_keras.data import default_data
    from fer_keras.evaluation.evaluate import accuracy_with_tta
    from fer_keras.modelio.saving import float32_model, load_keras_model

    run_dir = Path(run_dir)
    if not runs.is_complete(run_dir):
        raise FerError(f"{run_dir} is not a finished run folder (no {runs.METRICS_FILE} beside a {runs.CONFIG_FILE})")
    cfg, metrics = runs.read_config(run_dir), runs.read_metrics(run_dir)
    # float32 weights either way; float32 compute runs fast on CPUs without bfloat16
    model = float32_model(load_keras_model(run_dir / runs.MODEL_FILE))
    target = pretrained.HERE / f"{name}.keras"
    with atomic_path(target) as tmp:
        model.save(tmp)
    val = metrics["val"]
    card = {
        "description": description,
        "model": cfg["model"],
        "model_args": cfg["model_args"],
        "params": int(model.count_params()),
        "size_bytes": target.stat().st_size,
        "recipe": cfg["recipe"],
        "command": command,
        "config": cfg,
        "data": DATA_NOTE,
        "publictest": {
            "accuracy": val["accuracy"],
            "accuracy_tta": accuracy_with_tta(model, data or cfg["data"] or default_data()),
            "macro_f1": val["macro_f1"],
            "recall": {c: val["per_class"][c]["recall"] for c in CLASS_NAMES},
        },
        "training": {"epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
                     "minutes": metrics["train_time"] / 60,
                     "machine": machine or metrics.get("machine") or "not recorded"},
        "shipped_by": shipped_by,
    }
    write_json(pretrained.HERE / f"{name}.json", card)
    return card


@user_errors
def main(argv=None):
    parser = ArgumentParser(prog="python -m fer_keras.pretrained", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    ship = commands.add_parser("add", help="ship a finished run's best model with its card")
    ship.add_argument("run", help="finished run folder")
    ship.add_argument("--name", required=True, help="name of the shipped model (a file name stem)")
    ship.add_argument("--command", required=True, dest="train_command", help="the command that trained the run")
    ship.add_argument("--description", required=True, help="one line: what the model is")
    ship.add_argument("--data", help="FER2013 CSV for the TTA figure (default: the run's data)")
    ship.add_argument("--machine", help="what the run trained on (default: what its metrics.json recorded)")
    args = parser.parse_args(argv)
    if args.command == "add":
        shipped_by = " ".join(["python -m fer_keras.pretrained", *map(shlex.quote, argv or sys.argv[1:])])
        card = add(args.run, args.name, args.train_command, args.description, args.data, shipped_by, args.machine)
        print(format_card(args.name, card))
        return 0
    shipped = pretrained.cards()
    if not shipped:
        print(f"no shipped models in {pretrained.HERE}")
        return 1
    print("\n\n".join(format_card(name, card) for name, card in shipped.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
