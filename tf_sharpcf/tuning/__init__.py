"""Hyper-parameter search: settings, the search space, the shared warm starts, the
keras-tuner `Tuner` and its reports."""
