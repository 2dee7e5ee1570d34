"""The one settings object: environment variables ``SHIPYARD_*``, a ``.env`` file, CLI flags.

No other module reads Shipyard's configuration from ``os.environ``; everything takes a
``Settings`` (or values from one). (What the environment tells libraries — a terminal's
``COLUMNS``, the math libraries' thread counts that stream workers set — is not ours.)
A child process gets its settings the same way: ``child_env()`` is the environment that
rebuilds every setting (``to_env()``) in it, so a new field reaches workers with no other
change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "SHIPYARD_"

#: Settings that describe this one process and are never handed to a child: an MPI rank
#: belongs to the process mpiexec started, and a worker that inherited it would report
#: itself as that rank (and refuse ``--workers``).
PER_PROCESS = frozenset({"mpi_rank"})


def _user_math_threads() -> int:
    """``OMP_NUM_THREADS`` when the user set it to a positive number, else 1."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    # OpenMP also accepts lists ("4,2") and may meet an empty value: those mean the default.
    return int(value) if value.isdigit() and int(value) > 0 else 1


class Settings(BaseSettings):
    """Where Shipyard keeps its state and how it reaches its backends."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,  # Settings(mpi_rank=…) as well as the variable names
    )

    home: Path = Path(".shipyard")
    """Root folder for the embedded defaults (database, artifacts, keys, data)."""

    database_url: str = ""
    """SQLAlchemy URL of the registry database; empty means SQLite under ``home``."""

    artifacts_dir: Path | None = None
    """Content-addressed artifact store; default ``home/artifacts``."""

    signing_key: Path | None = None
    """Ed25519 private key used to sign manifests; default ``home/keys/signing.key``."""

    trusted_keys_dir: Path | None = None
    """Folder of ``*.pub`` keys whose signatures are accepted; default the signing key's folder."""

    auth_secret: SecretStr | None = None
    """Key that signs access tokens (JWT, HS256); default a random one kept in ``home/keys``."""

    api_key: SecretStr | None = None
    """API key or token a client command (``shipyard traffic``) sends to a server."""

    token_ttl_seconds: int = Field(default=900, gt=0)
    """How long an access token from the password flow stays valid."""

    protect_inference: bool = False
    """When true, inference routes need a token or API key too (any role)."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    """Largest request body the server accepts; larger ones get 413."""

    max_batch_size: int = Field(default=64, gt=0)
    """Most rows the batcher puts into one predictor call."""

    max_batch_delay_ms: float = Field(default=2.0, ge=0)
    """Longest a request waits for others to share its batch."""

    swap_poll_seconds: float = Field(default=1.0, gt=0)
    """How often a server checks whether an alias it serves has moved."""

    serve_models: list[str] = Field(default_factory=list)
    """Models a server loads at start (``NAME``, ``NAME:V``, ``NAME@ALIAS``); the first is the
    default of ``/invocations``. Set by ``shipyard serve --models``."""

    broker_url: str = ""
    """Message broker: ``amqp://…``, ``nats://…``, ``redis://…`` or ``memory://``; empty means
    the embedded NATS server under ``home``, started on first use."""

    publish_queues: list[str] = Field(default_factory=lambda: ["transactions"])
    """Queues the server's ``POST /v1/queues/{queue}/messages`` may publish to."""

    prediction_log: str = "parquet"
    """Where predictions are logged: ``parquet`` (files under ``prediction_log_dir``),
    ``database`` (a table in the registry database), a SQLAlchemy URL of another database,
    or ``off``."""

    prediction_log_dir: Path | None = None
    """Folder of the Parquet prediction log; default ``home/predictions``."""

    prediction_log_retention_days: float = Field(default=30.0, gt=0)
    """How long logged predictions are kept (the monitor expires older ones)."""

    prediction_log_buffer_rows: int = Field(default=100_000, gt=0)
    """Most predictions a server buffers for the log; more are dropped and counted
    (``shipyard_prediction_log_dropped_total``) rather than slow requests down."""

    prediction_log_flush_ms: float = Field(default=1000.0, gt=0)
    """How often buffered predictions are written (one file per model version each time)."""

    max_feedback_items: int = Field(default=10_000, gt=0)
    """Most ``{id, label}`` items one feedback batch may hold (``POST /v1/feedback``, the
    feedback queue); ``shipyard feedback FILE`` sends its file in batches of this size."""

    math_threads: int = Field(default_factory=_user_math_threads, gt=0)
    """Threads the math libraries (OpenMP, OpenBLAS, MKL) of each stream worker may start;
    default ``OMP_NUM_THREADS`` when set, else 1: a worker has one core's worth of work, and
    a thread per core in every worker collapsed throughput 8x."""

    mpi_rank: int | None = Field(
        default=None,
        validation_alias=AliasChoices("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"),
    )
    """This process's rank when started by ``mpiexec`` (Open MPI, MPICH, PMIx set it)."""

    monitor_interval_seconds: float = Field(default=2.0, gt=0)
    """How often ``shipyard monitor`` reads new predictions and feedback (one cycle)."""

    monitor_lease_ttl_seconds: float = Field(default=15.0, gt=0)
    """How long a monitor owns a model without renewing its lease; another monitor takes
    the model over once it expires. Keep it several times ``monitor_interval_seconds``."""

    monitor_history_seconds: float = Field(default=60.0, ge=0)
    """How often the monitor keeps a point of each version's live performance and drift for
    the charts of ``/ui`` (besides a monitor's first cycle and every change of a verdict);
    0 keeps every cycle."""

    monitor_history_days: float = Field(default=90.0, gt=0)
    """How long those points are kept (the monitor expires older ones)."""

    feedback_window_hours: float = Field(default=72.0, gt=0)
    """How long a prediction waits for its ground truth: feedback for an older prediction
    is counted ``late`` and not joined."""

    monitor_index_rows: int = Field(default=1_000_000, gt=0)
    """Most predictions per model the monitor keeps for joining feedback (the oldest go
    first; their feedback is ``late``)."""

    feedback_retention_days: float | None = Field(default=None, gt=0)
    """How long settled feedback rows are kept in the registry database (their counts stay);
    default ``prediction_log_retention_days``. Pending feedback is never expired."""

    feedback_grace_seconds: float = Field(default=10.0, ge=0)
    """How long feedback whose prediction is not in the log yet waits before it is
    ``unknown``: predictions reach the log asynchronously, a few flushes later."""

    retrain_lock_ttl_seconds: float = Field(default=60.0, gt=0)
    """How long a retrain holds its model's retrain lock without renewing it (it renews
    every third of this while it works); a retrain whose process died is taken over and
    abandoned once it expires."""

    scheduler: str = ""
    """Address of a Dask scheduler (``tcp://host:8786``) that trains ensembles and scores
    files; empty means a ``LocalCluster`` of ``cluster_workers`` processes on this machine."""

    cluster_workers: int = Field(default=2, gt=0)
    """Worker processes of the local Dask cluster (one thread each)."""

    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "SHIPYARD_PROMETHEUS_DIR"),
    )
    """Shared metrics folder of several server workers (prometheus-client multiprocess mode)."""

    # Images
    image_url_hosts: list[str] = Field(default_factory=list)
    """Hosts an image to classify may be fetched from by URL (``images.example.com``, or
    ``host:port`` for one port only), every redirect included; empty: URLs are refused.
    As JSON in the environment: ``SHIPYARD_IMAGE_URL_HOSTS='["images.example.com"]'``."""

    image_url_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """The largest image fetched by URL; reading stops there (413)."""

    image_url_timeout_seconds: float = Field(default=10.0, gt=0)
    """Time for a URL's image, from connecting to the last byte, redirects included (504)."""

    image_url_max_redirects: int = Field(default=3, ge=0)
    """Redirects followed for an image URL, each to a host on ``image_url_hosts``."""

    image_max_pixels: int = Field(default=16_777_216, gt=0)
    """The most pixels (width × height) an image to classify may have; larger ones are
    refused (413) before they are decoded."""

    # Pipeline stage workers
    stage_queue_prefix: str = Field(default="pipeline", pattern=r"^[A-Za-z0-9_-]+$")
    """Stage events go to one queue per stage, ``<prefix>.<stage>`` (``pipeline.train``)."""

    stage_redelivery_ms: float = Field(default=30_000.0, gt=0)
    """How long a stage event taken by a worker that then died waits before the broker
    hands it to another worker."""

    stage_lease_seconds: float = Field(default=30.0, gt=0)
    """A running stage's lease in the registry database, renewed every third of it; a
    redelivered event is deferred while a live worker holds its stage."""

    stage_max_deliveries: int = Field(default=5, gt=0)
    """A stage event delivered more times (it crashed every worker that took it) is
    dead-lettered with the reason and its run failed."""

    stage_defer_seconds: float = Field(default=1.0, ge=0)
    """How long a worker waits before putting back an event whose stage another worker holds."""

    pipeline_submit: bool = False
    """``POST /v1/pipelines/{name}/runs`` puts runs on the broker for stage workers instead
    of training them in a child process (a request's ``"submit"`` field overrides it)."""

    @field_validator("prediction_log")
    @classmethod
    def _prediction_log_kind(cls, value: str) -> str:
        if value in ("parquet", "database", "off") or "://" in value:
            return value
        raise ValueError(
            "must be parquet, database, off or a SQLAlchemy URL (postgresql+psycopg://…)"
        )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        home = self.home.expanduser()
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'registry.db'}")
        if self.artifacts_dir is None:
            object.__setattr__(self, "artifacts_dir", home / "artifacts")
        if self.signing_key is None:
            object.__setattr__(self, "signing_key", home / "keys" / "signing.key")
        if self.prediction_log_dir is None:
            object.__setattr__(self, "prediction_log_dir", home / "predictions")
        if self.trusted_keys_dir is None:
            assert self.signing_key is not None
            object.__setattr__(self, "trusted_keys_dir", self.signing_key.parent)
        return self

    def to_env(self) -> dict[str, str]:
        """Every setting (but ``PER_PROCESS`` ones) as the variable that sets it: lists as
        JSON, secrets revealed; a setting that is None is left out."""
        dumped = self.model_dump(mode="json")
        env = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name in PER_PROCESS or value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(dumped[name], str):
                text = dumped[name]
            else:  # numbers, booleans, lists: JSON, which the settings parse back
                text = json.dumps(dumped[name])
            env[_variables(name, field)[0]] = text
        return env

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process that runs with these settings: ``base``
        (default this process's) without any variable a setting reads, plus ``to_env()``."""
        read = {v.upper() for n, f in type(self).model_fields.items() for v in _variables(n, f)}
        kept = {
            key: value
            for key, value in (os.environ if base is None else base).items()
            if not key.upper().startswith(PREFIX) and key.upper() not in read
        }
        return kept | self.to_env()

    @property
    def artifacts_path(self) -> Path:
        """The artifact store folder, always set after validation."""
        assert self.artifacts_dir is not None
        return self.artifacts_dir

    @property
    def signing_key_path(self) -> Path:
        """The private signing key path, always set after validation."""
        assert self.signing_key is not None
        return self.signing_key

    @property
    def auth_secret_path(self) -> Path:
        """Where the generated token-signing secret lives when none is configured."""
        return self.signing_key_path.parent / "auth.secret"

    @property
    def prediction_log_path(self) -> Path:
        """The Parquet prediction log's folder, always set after validation."""
        assert self.prediction_log_dir is not None
        return self.prediction_log_dir

    @property
    def trusted_keys_path(self) -> Path:
        """The folder of trusted public keys, always set after validation."""
        assert self.trusted_keys_dir is not None
        return self.trusted_keys_dir

    # Secrets at rest

    secret_key: Path | None = None
    """Secret key file (``shipyard keys generate --secret PATH``) that encrypts every artifact
    blob the store writes and decrypts the blobs it reads; none keeps new blobs plain. Only
    the path is a setting: the key itself is never in the environment or printed."""

    @field_validator("secret_key", mode="before")
    @classmethod
    def _secret_key_path(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # SHIPYARD_SECRET_KEY= (empty) means no key
        return Path(value).expanduser() if isinstance(value, str | Path) else value


def _variables(name: str, field: FieldInfo) -> list[str]:
    """The environment variables a field is read from, the one ``to_env`` writes first:
    its aliases, then (``populate_by_name``) ``SHIPYARD_NAME``."""
    alias = field.validation_alias
    aliases = [alias] if isinstance(alias, str) else []
    if isinstance(alias, AliasChoices):
        aliases = [choice for choice in alias.choices if isinstance(choice, str)]
    return [*aliases, f"{PREFIX}{name}".upper()]
