"""Distributed compute on Dask: a client on a ``LocalCluster`` or on a scheduler's address.

Work sent to the cluster (ensemble learners, file partitions) is pure and recomputable, so a
lost worker costs only a recomputation on another one.
"""

from shipyard.cluster.client import cluster_description, open_cluster

__all__ = ["cluster_description", "open_cluster"]
