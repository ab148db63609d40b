"""BPR (Eq. 3): the base objective's BPR loss plus L2, nothing more.
"""
from __future__ import annotations


from tf_sharpcf.objectives.base import Objective


class BPR(Objective):
    """Eq. 3: the batch BPR loss (+ L2)."""
