"""Optimizers and learning-rate schedules from the config (Keras' own classes wherever they exist).

Schedules run per optimizer step. `cosine` and `constant` use `CosineDecay`'s built-in warm-up;
`cosine_restarts` gets it from `LinearWarmup`; `plateau` is the `ReduceLROnPlateau` callback, which
needs a plain rate, so its warm-up is a per-epoch `LearningRateScheduler`.
"""

import math

import keras
from keras import ops

# Substrings of variable names that weight decay leaves alone (biases, norm scales and offsets).
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="fer_keras")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Rate rising linearly from 0 to `peak` over `warmup_steps`, then `after`, a schedule whose step
    count starts at the end of the warm-up (for `CosineDecayRestarts`, which has no warm-up)."""

    def __init__(self, peak, warmup_steps, after):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.after = after

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / self.warmup_steps
        after = self.after(ops.maximum(step - self.warmup_steps, 0.0))
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "after": keras.optimizers.schedules.serialize(self.after)}

    @classmethod
    def from_config(cls, config):
        return cls(config["peak"], config["warmup_steps"], keras.optimizers.schedules.deserialize(config["after"]))


def learning_rate(cfg, steps_per_epoch):
    """The optimizer's `learning_rate`: a float (constant or plateau without warm-up) or a per-step
    schedule. Keras' `CosineDecay` gives the warm-up of `cosine`, and of `constant` with `alpha=1`
    (no decay after it); `cosine_restarts` has no warm-up of its own, so `LinearWarmup` adds it."""
    peak = cfg["learning_rate"]
    warmup_steps = round(cfg["warmup_epochs"] * steps_per_epoch)
    schedule = cfg["schedule"]
    if schedule == "plateau" or (schedule == "constant" and not warmup_steps):
        return peak
    if schedule in ("cosine", "constant"):
        total = cfg["epochs"] * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else peak,
            decay_steps=max(total - warmup_steps, 1),
            alpha=1.0 if schedule == "constant" else 0.0,
            warmup_target=peak if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    restarts = keras.optimizers.schedules.CosineDecayRestarts(
        peak, first_decay_steps=cfg["restart_epochs"] * steps_per_epoch, t_mul=1.0
    )
    return LinearWarmup(peak, warmup_steps, restarts) if warmup_steps else restarts


def build_optimizer(cfg, steps_per_epoch):
    """The configured optimizer with its schedule, decoupled weight decay, gradient clipping and weight
    averaging (Keras' `use_ema`)."""
    kwargs = {
        "learning_rate": learning_rate(cfg, steps_per_epoch),
        "weight_decay": cfg["weight_decay"],
        "clipnorm": cfg["clipnorm"],
    }
    if cfg["optimizer"] == "sgd":
        kwargs.update(momentum=cfg["momentum"], nesterov=cfg["nesterov"])
    if cfg["ema"]:
        kwargs.update(use_ema=True, ema_momentum=cfg["ema"])
    optimizer = keras.optimizers.get({"class_name": cfg["optimizer"], "config": kwargs})
    if cfg["weight_decay"]:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def schedule_callbacks(cfg):
    """Callbacks a schedule needs: `ReduceLROnPlateau` (and its warm-up) for `plateau`, else none."""
    if cfg["schedule"] != "plateau":
        return []
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=cfg["plateau_factor"], patience=cfg["plateau_patience"]
        )
    ]
    warmup = math.ceil(cfg["warmup_epochs"])
    if warmup:
        peak = cfg["learning_rate"]
        callbacks.insert(
            0,
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: peak * (epoch + 1) / (warmup + 1) if epoch <= warmup else lr
            ),
        )
    return callbacks
