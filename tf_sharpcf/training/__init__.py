"""Training: the one recipe (train.py: build, compile, fit from a `Start`), its
callbacks, checkpoints, the run folder (run_dir.py) and the runner's shared
BPR warm-ups (warmup.py)."""
