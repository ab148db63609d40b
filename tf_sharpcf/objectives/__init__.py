"""Training objectives, one module per method: the base `Objective` and its
pure loss functions (base.py), BPR, APR and SharpCF, and SharpCF's
`TrajectoryTable`. Which objective a `--method` builds is `methods.py`'s."""
from tf_sharpcf.objectives.base import Objective, StepInputs, bpr_loss, dot, l2_penalty  # noqa: F401
from tf_sharpcf.objectives.bpr import BPR  # noqa: F401
from tf_sharpcf.objectives.apr import APR, adversarial_perturbation  # noqa: F401
from tf_sharpcf.objectives.sharpcf import SharpCF, trajectory_loss  # noqa: F401
from tf_sharpcf.objectives.trajectory import TrajectoryTable  # noqa: F401
