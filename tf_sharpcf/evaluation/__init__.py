"""Full-ranking evaluation: top-k with training items masked (ranking.py) and the
metrics computed from its hits (metrics.py)."""
