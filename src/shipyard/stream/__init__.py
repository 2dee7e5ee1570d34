"""Stream scoring: inputs from a broker queue, scored in batches, results to another queue."""

from shipyard.stream.scorer import Scorer, ScorerConfig, ScorerStats

__all__ = ["Scorer", "ScorerConfig", "ScorerStats"]
