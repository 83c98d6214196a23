"""Weights & Biases tracking of a run; a failure inside W&B prints a warning and never stops training.

Offline runs (no API key, or `--wandb offline`) are written under the run folder, or under
`$WANDB_DIR`, and can be uploaded later with `wandb sync`; the tests read one back with
`read_offline_run` in tests/wandb_offline.py.
"""

import functools
import os
import re
import sys
import uuid
from pathlib import Path

import numpy as np

from fer_keras.constants import CLASS_NAMES
from fer_keras.io import write_text

# wandb is imported inside the guarded functions: even a broken install must not stop training.

MODES = ("auto", "online", "offline", "disabled")
ID_FILE = "wandb_id.txt"


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
    path = run_dir / ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = f"{re.sub(r'[^A-Za-z0-9_-]+', '-', run_dir.name)[:48]}-{uuid.uuid4().hex[:8]}"
    write_text(path, run_id + "\n")
    return run_id


@_guarded()
def metrics_logger(run):
    """Keras callback logging every epoch's metrics and learning rate to `run`, or None."""
    if run is None:
        return None
    from wandb.integration.keras import WandbMetricsLogger

    class GuardedMetricsLogger(WandbMetricsLogger):
        """WandbMetricsLogger whose W&B errors cannot stop `fit`."""

        on_epoch_end = _guarded()(WandbMetricsLogger.on_epoch_end)

    return GuardedMetricsLogger(log_freq="epoch")


@_guarded()
def log_results(run, results, model_path=None, extra=None):
    """Log evaluation `results` ({split: metrics}) to `run`: summary, confusion matrices, per-class
    table, and the best model file as an artifact of type "model"."""
    if run is None:
        return
    import wandb

    from fer_keras.metrics import train_val_gap

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
        artifact.add_file(str(model_path), name="model.keras")
        run.log_artifact(artifact, aliases=["best", "latest"])


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
def finish(run, exit_code=None):
    """Close `run` (exit_code != 0 marks it failed) and wait until its files are on disk.

    `run.finish()` returns before the W&B service has written the whole .wandb file; the
    service's teardown flushes it (the next `start_run` starts a new service, in under a second).
    """
    if run is not None:
        import wandb

        run.finish(exit_code=exit_code)
        wandb.teardown()
