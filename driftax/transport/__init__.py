"""driftax.transport"""
