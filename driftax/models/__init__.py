"""What we sample from: `Target`, NumPyro models, a gallery with ground truth, posteriordb."""
from driftax.models import gallery, planted, posteriordb, ssm
from driftax.models.base import DataLikelihood, Target, as_target
from driftax.models.numpyro import from_numpyro

__all__ = ["Target", "DataLikelihood", "as_target", "from_numpyro", "gallery", "planted", "posteriordb", "ssm"]
