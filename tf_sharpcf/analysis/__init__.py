"""Analysis of finished runs: the paper's figures (plots.py), the loss landscape
(landscape.py) and the experiment runner's tables (experiments.py)."""
