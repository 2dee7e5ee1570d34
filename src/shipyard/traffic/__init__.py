"""Simulated clients: request load against a server (later: users who send feedback)."""
