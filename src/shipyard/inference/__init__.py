"""Loaded model versions: export to a safe format, verify, load, predict."""

from shipyard.inference.formats import ExportedModel, export_model
from shipyard.inference.predictor import Predictor, load_predictor

__all__ = ["ExportedModel", "Predictor", "export_model", "load_predictor"]
