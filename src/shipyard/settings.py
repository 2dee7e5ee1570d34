"""The one settings object: environment variables ``SHIPYARD_*``, a ``.env`` file, CLI flags.

No other module reads ``os.environ``; everything takes a ``Settings`` (or values from one).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where Shipyard keeps its state and how it reaches its backends."""

    model_config = SettingsConfigDict(
        env_prefix="SHIPYARD_", env_file=".env", extra="ignore", frozen=True
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

    mpi_rank: int | None = Field(
        default=None,
        validation_alias=AliasChoices("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"),
    )
    """This process's rank when started by ``mpiexec`` (Open MPI, MPICH, PMIx set it)."""

    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "SHIPYARD_PROMETHEUS_DIR"),
    )
    """Shared metrics folder of several server workers (prometheus-client multiprocess mode)."""

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
        if self.trusted_keys_dir is None:
            assert self.signing_key is not None
            object.__setattr__(self, "trusted_keys_dir", self.signing_key.parent)
        return self

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
    def trusted_keys_path(self) -> Path:
        """The folder of trusted public keys, always set after validation."""
        assert self.trusted_keys_dir is not None
        return self.trusted_keys_dir
