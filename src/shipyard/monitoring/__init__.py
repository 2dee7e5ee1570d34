"""Monitoring: the prediction log, feedback, live performance and drift per model version."""
