"""What we sample from: `Target`, NumPyro models, a gallery with ground truth, posteriordb."""
from driftax.models import gallery, posteriordb
from driftax.models.base import Target, as_target
from driftax.models.numpyro import from_numpyro

__all__ = ["Target", "as_target", "from_numpyro", "gallery", "posteriordb"]
