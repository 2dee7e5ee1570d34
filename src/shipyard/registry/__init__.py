"""The model registry: versions, aliases, runs (lineage) and signed, content-addressed artifacts.

``Registry`` is the entry point; everything else here is what it takes and hands out.
"""

from shipyard.registry.artifacts import ArtifactStore, FileEntry, Manifest, VerifiedArtifact
from shipyard.registry.records import (
    ModelInfo,
    ModelVersionInfo,
    RunInfo,
    StageInfo,
)
from shipyard.registry.reference import DEFAULT_ALIAS, ModelRef
from shipyard.registry.registry import Registry
from shipyard.registry.runs import Runs
from shipyard.registry.signing import KeyPair, Signer, TrustedKeys, generate_keypair
from shipyard.registry.users import ApiKey, Principal, Role, User, Users, role_allows

__all__ = [
    "DEFAULT_ALIAS",
    "ApiKey",
    "ArtifactStore",
    "FileEntry",
    "KeyPair",
    "Manifest",
    "ModelInfo",
    "ModelRef",
    "ModelVersionInfo",
    "Principal",
    "Registry",
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
