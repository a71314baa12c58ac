"""driftax.infer"""
