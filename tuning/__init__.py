"""Hyperparameter search for fer_keras with KerasTuner: spaces, tuners, CLI and summaries.

`python -m tuning.search --help`; every trial trains through `fer_keras.training.runner`.
"""
