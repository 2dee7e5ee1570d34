"""Monitoring: ground truth fed back for predictions, joined, scored and checked for drift."""
