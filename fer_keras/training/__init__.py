"""Training runs: the train command, the run orchestrator, configs and recipes, callbacks,
optimizers, losses, distillation, precision, distribution and experiment tracking."""
