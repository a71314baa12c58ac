"""What a user calls: `sample`, the method registry, diagnostics, and each engine's entry point."""
from driftax.infer import bridges, diagnostics, learning, methods, smoothing
from driftax.infer.bridges import TrainedBridge, bridge_metrics, load_bridge, train_bridge
from driftax.infer.diagnostics import compare_to_reference, to_inference_data
from driftax.infer.gaussian_vi import GaussianApprox, gaussian_vi
from driftax.infer.learning import learn, markov_score_climbing
from driftax.infer.recovery import recover_direction
from driftax.infer.run import sample
from driftax.infer.smoothing import SmoothingResult, smooth

__all__ = ["sample", "methods", "diagnostics", "to_inference_data", "compare_to_reference", "recover_direction", "gaussian_vi", "GaussianApprox",
           "bridges", "train_bridge", "TrainedBridge", "load_bridge", "bridge_metrics",
           "smooth", "SmoothingResult", "learn", "markov_score_climbing", "smoothing", "learning"]
