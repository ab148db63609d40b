"""BPR (Eq. 3): the base objective's loss on scores (BPR by default) plus L2,
with no regulariser: `--method bpr`, whatever the `--loss`.
"""
from __future__ import annotations


from tf_sharpcf.objectives.base import Objective


class BPR(Objective):
    """Eq. 3: the batch BPR loss (+ L2); with `loss=`, that loss (+ L2)."""
