"""Simulated users: requests against a server or a scorer, ground-truth labels sent back
after a delay (``shipyard traffic``; ``users`` is the loop, ``targets`` the adapters)."""
