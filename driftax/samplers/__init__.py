"""driftax.samplers"""
