"""driftax: probabilistic inference and sampling on JAX."""
from driftax import infer, models, samplers, transport

__version__ = "0.1.0"
__all__ = ["models", "samplers", "infer", "transport", "__version__"]
