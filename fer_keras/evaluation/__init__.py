"""Judging models and runs: metrics, reports and confusion matrices, Grad-CAM, run comparison."""
