"""Optimizers with sparse row updates (optimizers.py), the row helpers they share
(sparse.py) and the fused CPU row-update kernel (kernels/)."""
