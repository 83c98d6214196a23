"""Weights & Biases tracking of a run; a failure inside W&B prints a warning and never stops training.

A training run logs its config, per-epoch metrics (with the train-validation gap), evaluation, model
summary, a Table of sample faces with their predictions and Grad-CAM overlays; `log_comparison` logs
a study's comparisons as short runs of their own.

Offline runs (no API key, or `--wandb offline`) are written under the run folder, or under
`$WANDB_DIR`, and can be uploaded later with `wandb sync`; the tests read one back with
`read_offline_run` in tests/wandb_offline.py.
"""

import functools
import html
import itertools
import os
import re
import sys
import uuid
from pathlib import Path

import numpy as np

from fer_keras.constants import CLASS_NAMES, NUM_CLASSES
from fer_keras.core import runs
from fer_keras.core.io import write_text

# wandb is imported inside the guarded functions: even a broken install must not stop training.

MODES = ("auto", "online", "offline", "disabled")
SAMPLE_FACES = 32  # rows of the "samples" table
GRAD_CAM_FACES = 8  # the first faces of that table, explained


def _guarded(default=None):
    """Run the wrapped W&B call; on any error print a one-line warning and return `default`."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001  (W&B must never stop training)
                message = " ".join(str(exc).split())[:300]
                print(f"warning: W&B {fn.__name__} failed, going on without it: "
                      f"{type(exc).__name__}: {message}", file=sys.stderr)
                return default

        return wrapper

    return decorate


@_guarded()
def start_run(cfg, run_dir):
    """Open the W&B run of a training run (config, group, tags, name from `cfg`), or None.

    The run id is kept in `run_dir/wandb_id.txt`, so running the same command again resumes the
    same W&B run. Returns None when W&B is disabled or fails.
    """
    import wandb

    mode = resolve_mode(cfg.get("wandb") or "auto")
    if mode == "disabled":
        return None
    run_dir = Path(run_dir)
    return wandb.init(
        mode=mode,
        dir=None if os.environ.get("WANDB_DIR") else run_dir,
        project=cfg.get("wandb_project") or "fer_keras",
        group=cfg.get("group") or cfg.get("model"),
        tags=_tags(cfg),
        name=cfg.get("name") or run_dir.name,
        job_type="train",
        config=_wandb_config(cfg),
        id=_run_id(run_dir),
        resume="allow",
        reinit="finish_previous",
    )


def resolve_mode(mode):
    """`auto`: $WANDB_MODE if set, else online when an API key is configured, else offline."""
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")


def _has_credentials():
    """Whether W&B would find an API key: environment variables or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk.lib.wbauth import read_netrc_auth

    return read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")) is not None


def _tags(cfg):
    """cfg tags plus the model and recipe names, without repeats."""
    tags = cfg.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    wanted = [*tags, cfg.get("model"), cfg.get("recipe")]
    return list(dict.fromkeys(str(t).strip() for t in wanted if t and str(t).strip()))


def _wandb_config(value):
    """The config with "." in keys replaced by "_" (W&B reads dots as nesting)."""
    if isinstance(value, dict):
        return {str(k).replace(".", "_"): _wandb_config(v) for k, v in value.items()}
    return value


def _run_id(run_dir):
    """The W&B run id of `run_dir`: its folder name plus a random suffix, kept in wandb_id.txt."""
    path = run_dir / runs.WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = f"{re.sub(r'[^A-Za-z0-9_-]+', '-', run_dir.name)[:48]}-{uuid.uuid4().hex[:8]}"
    write_text(path, run_id + "\n")
    return run_id


@_guarded()
def metrics_logger(run):
    """Keras callback logging every epoch's metrics, learning rate and train-validation gap to `run`,
    or None."""
    if run is None:
        return None
    from wandb.integration.keras import WandbMetricsLogger

    class GuardedMetricsLogger(WandbMetricsLogger):
        """WandbMetricsLogger adding `train_val_gap` to each epoch; its W&B errors cannot stop `fit`."""

        @_guarded()
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, _with_gap(logs))

    return GuardedMetricsLogger(log_freq="epoch")


def _with_gap(logs):
    """A copy of an epoch's logs plus `train_val_gap` (accuracy - val_accuracy) when both are there."""
    logs = dict(logs or {})
    if "accuracy" in logs and "val_accuracy" in logs:
        logs["train_val_gap"] = float(logs["accuracy"]) - float(logs["val_accuracy"])
    return logs


@_guarded()
def log_results(run, results, model_path=None, extra=None):
    """Log evaluation `results` ({split: metrics}) to `run`: summary, confusion matrices, per-class
    table, and the best model file as an artifact of type "model"."""
    if run is None:
        return
    import wandb

    from fer_keras.evaluation.metrics import train_val_gap

    summary = {f"{split}/{key}": m[key] for split, m in results.items()
               for key in ("accuracy", "macro_f1", "loss", "macro_precision", "macro_recall")}
    gap = train_val_gap(results)
    if gap is not None:
        summary["train_val_gap"] = gap
    summary.update(extra or {})
    run.summary.update(summary)

    per_class = wandb.Table(columns=["split", "class", "precision", "recall", "f1", "support"])
    for split, m in results.items():
        for name, c in m["per_class"].items():
            per_class.add_data(split, name, c["precision"], c["recall"], c["f1"], c["support"])
    charts = {f"{split}/confusion_matrix": _confusion_chart(m["confusion_matrix"], split)
              for split, m in results.items()}
    run.log({"per_class": per_class, **charts})

    if model_path is not None:
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=summary)
        artifact.add_file(str(model_path), name=runs.MODEL_FILE)
        run.log_artifact(artifact, aliases=["best", "latest"])


@_guarded()
def log_reused_run(cfg, run_dir, source):
    """The W&B run of a run folder filled from `source`, a finished run of the same settings (a study's
    series sharing a setting): its epochs, as `metrics_logger` logs them, and its results, as `log_results` logs
    them, tagged `reused`."""
    run = start_run({**cfg, "tags": [*_tags(cfg), "reused"], "reused_from": str(source)}, run_dir)
    if run is None:
        return
    _, rows = runs.read_history(run_dir)
    for row in rows:
        logs = _with_gap({k: float(v) for k, v in row.items() if k != "epoch" and v})
        run.log({"epoch/epoch": int(row["epoch"]), **{f"epoch/{k}": v for k, v in logs.items()}})
    metrics = runs.read_metrics(source) or {}
    log_results(run, {split: metrics[split] for split in ("train", "val", "test") if split in metrics})
    finish(run, 0)


def _confusion_chart(cm, split):
    """W&B's confusion-matrix chart from a count matrix (each cell expanded back to label pairs)."""
    import wandb

    cm = np.asarray(cm)
    true, pred = np.divmod(np.repeat(np.arange(cm.size), cm.ravel()), cm.shape[1])
    return wandb.plot.confusion_matrix(
        y_true=true.tolist(), preds=pred.tolist(), class_names=list(CLASS_NAMES),
        title=f"Confusion matrix: {split}",
    )


@_guarded()
def log_trained_model(run, model, splits):
    """Everything `run` shows of a trained `model`: its summary, and predictions and Grad-CAM on the
    same showcase faces."""
    if run is None:
        return
    log_model_summary(run, model)
    faces, source = showcase_faces(splits, SAMPLE_FACES)
    log_samples(run, model, faces, source)
    log_grad_cam(run, model, faces.subset(np.arange(min(GRAD_CAM_FACES, len(faces)))))


@_guarded()
def log_model_summary(run, model):
    """Log the Keras `model.summary()` text as an HTML panel "model_summary", parameter counts in the
    run summary."""
    if run is None:
        return
    import wandb

    from fer_keras.models.profile import count_trainable

    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    run.summary.update({"params": int(model.count_params()), "trainable_params": int(count_trainable(model))})
    run.log({"model_summary": wandb.Html(f"<pre>{html.escape(text)}</pre>")})


@_guarded()
def log_samples(run, model, faces, source):
    """Log a Table "samples" of `faces` (from `showcase_faces`, taken from `source`): image, true and
    predicted label, confidence, correct."""
    if run is None:
        return
    import wandb

    from fer_keras.inference.predictor import Predictor

    probs = Predictor(model).predict_proba(faces.images)
    table = wandb.Table(columns=["image", "true", "predicted", "confidence", "correct"])
    for image, label, p in zip(faces.images, faces.labels, probs):
        pred = int(p.argmax())
        table.add_data(wandb.Image(image[..., 0]), CLASS_NAMES[label], CLASS_NAMES[pred], float(p[pred]),
                       bool(pred == label))
    run.summary["samples_from"] = source
    run.log({"samples": table})


@_guarded()
def log_grad_cam(run, model, faces):
    """Log "grad_cam": Grad-CAM overlays of `faces`, captioned "true / pred"; models without a
    convolutional feature map are skipped."""
    if run is None:
        return
    import wandb

    from fer_keras.inference.gradcam import feature_layers, grad_cam, overlay

    if not feature_layers(model):
        return
    heatmaps, probs = grad_cam(model, faces.images)
    run.log({"grad_cam": [
        wandb.Image(overlay(face, heat), caption=f"{CLASS_NAMES[label]} / {CLASS_NAMES[p.argmax()]}")
        for face, heat, label, p in zip(faces.images, heatmaps, faces.labels, probs)
    ]})


def showcase_faces(splits, n, seed=0):
    """The faces every run of a project shows, and where they come from: `n` PublicTest faces (the
    split holding them), else test, else val; seeded, classes in turn so rare ones show too."""
    for data in (splits.get("val"), splits.get("test")):
        if data is not None and data.usage is not None and (data.usage == "PublicTest").any():
            data, source = data.subset(np.flatnonzero(data.usage == "PublicTest")), "PublicTest"
            break
    else:
        source = "test" if "test" in splits else "val"
        data = splits[source]
    return data.subset(_classes_in_turn(data.labels, n, seed)), source


def _classes_in_turn(labels, n, seed):
    """Indices of up to `n` rows: one of each class in turn, each class's rows in a seeded order."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(NUM_CLASSES)]
    order = [i for rank in itertools.zip_longest(*per_class) for i in rank if i is not None]
    return np.array(order[:n], dtype=np.int64)


@_guarded()
def log_comparison(out, *, study, series=None, mode="auto", project=None):
    """Log the comparison `fer_keras.evaluation.compare.compare` wrote in `out` as a short W&B run (job_type
    "compare", group `study`): Tables "comparison" (and "comparison_over_seeds"), its plots as images."""
    import pandas as pd
    import wandb

    mode = resolve_mode(mode)
    if mode == "disabled":
        return
    out = Path(out)
    run = wandb.init(
        mode=mode, dir=None if os.environ.get("WANDB_DIR") else out, project=project or "fer_keras",
        group=study, job_type="compare", name=f"{study}/{series or 'all'} comparison",
        tags=[study, "comparison"], reinit="finish_previous",
    )
    exit_code = 1
    try:
        logged = {name: wandb.Table(dataframe=pd.read_csv(out / f"{name}.csv"))
                  for name in ("comparison", "comparison_over_seeds") if (out / f"{name}.csv").exists()}
        logged.update({name: wandb.Image(str(out / f"{name}.png"))
                       for name in ("curves", "per_class") if (out / f"{name}.png").exists()})
        run.log(logged)
        exit_code = 0
    finally:
        finish(run, exit_code)


@_guarded()
def finish(run, exit_code=None):
    """Close `run` (exit_code != 0 marks it failed) and wait until its files are on disk.

    `run.finish()` returns before the W&B service has written the whole .wandb file; the
    service's teardown flushes it (the next `start_run` starts a new service, in under a second).
    """
    if run is not None:
        import wandb

        run.finish(exit_code=exit_code)
        wandb.teardown()
