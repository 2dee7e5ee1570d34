"""Shipyard: data → pipeline → signed registry → predictions, monitored and retrained."""

__version__ = "0.1.0"
