"""Monitoring: what a served model version predicts, whether it was right, and whether live
data still looks like its training data (drift against the version's reference profile).

This package sits below ``server`` and ``stream`` and above ``inference``, ``registry``,
``messaging`` and ``data``.
"""
