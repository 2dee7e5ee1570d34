"""Prometheus metrics of the stream scorer (``shipyard_stream_`` prefix, base units).

Every series carries ``worker``: the worker's index under ``shipyard stream --workers N``,
or its MPI rank under ``mpiexec``. Labels are bounded: queue and model names, versions,
reason kinds — never a message id. With several workers, ``PROMETHEUS_MULTIPROC_DIR``
(set by ``shipyard stream --workers N``) lets the parent serve the sum of all of them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

CONSUMED = Counter(
    "shipyard_stream_messages_consumed_total",
    "Messages taken from the input queue (a redelivery counts again)",
    ["queue", "worker"],
)
SCORED = Counter(
    "shipyard_stream_messages_scored_total",
    "Messages scored whose result the broker confirmed",
    ["model", "version", "worker"],
)
DEAD_LETTERED = Counter(
    "shipyard_stream_messages_dead_lettered_total",
    "Messages moved to the dead-letter queue, by reason",
    ["queue", "reason", "worker"],
)
BATCH_SIZE = Histogram(
    "shipyard_stream_batch_size_messages",
    "Messages per consumed batch",
    ["worker"],
    buckets=BATCH_BUCKETS,
)
LATENCY = Histogram(
    "shipyard_stream_latency_seconds",
    "From an input's publication to its result's confirmation by the broker",
    ["worker"],
    buckets=LATENCY_BUCKETS,
)
BACKLOG = Gauge(
    "shipyard_stream_backlog_messages",
    "Messages in the input queue that no consumer has taken yet (consumer lag)",
    ["queue", "worker"],
    multiprocess_mode="max",
)
BACKPRESSURE = Counter(
    "shipyard_stream_backpressure_waits_total",
    "Times results waited because the results queue was full",
    ["queue", "worker"],
)
BROKER_RETRIES = Counter(
    "shipyard_stream_broker_retries_total",
    "Broker operations retried because the broker could not be reached",
    ["operation", "worker"],
)
SWAPS = Counter(
    "shipyard_stream_model_swaps_total",
    "Alias moves picked up by this worker",
    ["model", "worker"],
)
SHADOW_DROPPED = Counter(
    "shipyard_stream_shadow_dropped_total",
    "Scored rows the model's version in shadow did not score: it fell behind or failed",
    ["model", "worker"],
)
LOGGED = Counter(
    "shipyard_stream_prediction_log_rows_total",
    "Predictions written to the prediction log before their messages were acked",
    ["model", "worker"],
)
