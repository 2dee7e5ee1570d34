"""The one settings object: environment variables ``SHIPYARD_*``, a ``.env`` file, CLI flags.

No other module reads ``os.environ``; everything takes a ``Settings`` (or values from one).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator
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
    def trusted_keys_path(self) -> Path:
        """The folder of trusted public keys, always set after validation."""
        assert self.trusted_keys_dir is not None
        return self.trusted_keys_dir
