"""The model registry: versions, aliases, runs (lineage) and signed, content-addressed artifacts.

``Registry`` is the entry point; everything else here is what it takes and hands out. Names
are imported on first use (PEP 562), so that a command naming ``DEFAULT_ALIAS`` or
``ModelRef`` — every command's ``--help`` — does not load SQLAlchemy, Alembic and PyNaCl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shipyard.registry.reference import DEFAULT_ALIAS, SHADOW_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.registry.artifacts import ArtifactStore, FileEntry, Manifest, VerifiedArtifact
    from shipyard.registry.events import EventRecord
    from shipyard.registry.monitoring import (
        FeedbackReceipt,
        FeedbackRecord,
        FeedbackStatus,
        HistoryPoint,
        MonitoringStore,
    )
    from shipyard.registry.records import ModelInfo, ModelVersionInfo, RunInfo, StageInfo
    from shipyard.registry.registry import Registry
    from shipyard.registry.retraining import Begun, RetrainAttempt, RetrainLocks
    from shipyard.registry.runs import Runs
    from shipyard.registry.signing import KeyPair, Signer, TrustedKeys, generate_keypair
    from shipyard.registry.users import ApiKey, Principal, Role, User, Users, role_allows

_HOMES = {
    "artifacts": ("ArtifactStore", "FileEntry", "Manifest", "VerifiedArtifact"),
    "events": ("EventRecord",),
    "monitoring": (
        "FeedbackReceipt",
        "FeedbackRecord",
        "FeedbackStatus",
        "HistoryPoint",
        "MonitoringStore",
    ),
    "records": ("ModelInfo", "ModelVersionInfo", "RunInfo", "StageInfo"),
    "registry": ("Registry",),
    "retraining": ("Begun", "RetrainAttempt", "RetrainLocks"),
    "runs": ("Runs",),
    "signing": ("KeyPair", "Signer", "TrustedKeys", "generate_keypair"),
    "users": ("ApiKey", "Principal", "Role", "User", "Users", "role_allows"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "DEFAULT_ALIAS",
    "SHADOW_ALIAS",
    "ApiKey",
    "ArtifactStore",
    "Begun",
    "EventRecord",
    "FeedbackReceipt",
    "FeedbackRecord",
    "FeedbackStatus",
    "FileEntry",
    "HistoryPoint",
    "KeyPair",
    "Manifest",
    "ModelInfo",
    "ModelRef",
    "ModelVersionInfo",
    "MonitoringStore",
    "Principal",
    "Registry",
    "RetrainAttempt",
    "RetrainLocks",
    "Role",
    "RunInfo",
    "Runs",
    "Signer",
    "StageInfo",
    "TrustedKeys",
    "User",
    "Users",
    "VerifiedArtifact",
    "generate_keypair",
    "role_allows",
]


if not TYPE_CHECKING:  # for mypy the imports above define the names: a wrong one is an error

    def __getattr__(name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
