"""Plumbing every layer uses and that needs no TensorFlow: command lines, atomic files, folder
locks, cache paths, markdown tables."""
