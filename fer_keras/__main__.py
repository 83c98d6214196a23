"""`python -m fer_keras COMMAND [ARGS]`: every fer_keras command in one place; without a command,
the list of them."""

import importlib
import sys

# command -> (module holding its `main`, what it does)
COMMANDS = {
    "train": ("fer_keras.training.train", "train, evaluate and track a model (resumable)"),
    "evaluate": ("fer_keras.evaluation.evaluate", "score a model on a labelled CSV: report, confusion matrix"),
    "predict": ("fer_keras.inference.predict", "classify a CSV, images or photos; write predictions"),
    "serve": ("fer_keras.inference.serve", "web page and JSON API for a model"),
    "video": ("fer_keras.inference.video", "annotate the faces of a video or webcam"),
    "export": ("fer_keras.modelio.export", "SavedModel and TFLite export"),
    "explain": ("fer_keras.evaluation.explain", "Grad-CAM heatmaps for sample faces"),
    "compare": ("fer_keras.evaluation.compare", "compare finished runs: table and plots"),
    "augment": ("fer_keras.data.augment", "preview an augmentation preset on sample faces"),
    "data": ("fer_keras.data.__main__", "dataset statistics, plots, synthetic data"),
    "models": ("fer_keras.models.__main__", "list and profile the registered architectures"),
    "pretrained": ("fer_keras.pretrained.__main__", "the shipped models and their cards"),
    "search": ("tuning.search", "KerasTuner hyperparameter search (Hyperband first)"),
    "study": ("tuning.study", "the original projects' experiment series"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
        print("usage: python -m fer_keras COMMAND [ARGS]   (COMMAND --help for its options)\n\ncommands:")
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module, _ = COMMANDS[argv[0]]
    return importlib.import_module(module).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
