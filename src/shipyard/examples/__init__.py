"""Examples shipped with the package: a pipeline spec and the request bodies that go with it.

The package holds the one source of each example; ``examples/`` in the repository holds
byte-for-byte copies (a test keeps them equal) so a clone's root works as a README folder.
``shipyard examples list`` names them, ``shipyard examples copy NAME`` writes one into a
folder, and a spec argument that is no file (``shipyard pipeline run fraud``) means the
example of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from shipyard.errors import ConflictError, InvalidInputError, NotFoundError

SPEC_FILE = "pipeline.yaml"


@dataclass(frozen=True)
class Example:
    """A packaged example: its name, what it is, and its files (the spec first)."""

    name: str
    description: str
    files: tuple[str, ...]


def _root() -> Traversable:
    return files(__name__)


def example_names() -> list[str]:
    """Names of the packaged examples, sorted."""
    return sorted(
        entry.name
        for entry in _root().iterdir()
        if entry.is_dir() and (entry / SPEC_FILE).is_file()
    )


def _folder(name: str) -> Traversable:
    if name not in example_names():
        raise NotFoundError(
            f"no packaged example named {name!r}; examples: {', '.join(example_names())} "
            "(`shipyard examples list`)"
        )
    return _root() / name


def get_example(name: str) -> Example:
    """The packaged example called ``name``; NotFoundError names the others."""
    folder = _folder(name)
    names = sorted(
        (entry.name for entry in folder.iterdir() if entry.is_file()),
        key=lambda file: (file != SPEC_FILE, file),
    )
    spec = yaml.safe_load((folder / SPEC_FILE).read_text(encoding="utf-8"))
    description = str(spec.get("description", "")) if isinstance(spec, dict) else ""
    return Example(name=name, description=description, files=tuple(names))


def example_spec(name: str) -> Path:
    """Path of a packaged example's spec, e.g. ``example_spec("fraud")``."""
    return Path(str(_folder(name) / SPEC_FILE))


def copy_example(name: str, destination: Path, *, force: bool = False) -> list[Path]:
    """Write an example's files into ``destination`` (made if missing) and return their paths.

    A file already there with the same bytes is left alone; one with other bytes is a
    ConflictError, before anything is written, unless ``force`` replaces it.
    """
    example = get_example(name)
    folder = _folder(name)
    if destination.exists() and not destination.is_dir():
        raise InvalidInputError(f"{destination} is a file; give a folder to copy {name} into")
    contents = {destination / file: (folder / file).read_bytes() for file in example.files}
    folders = [str(path) for path in contents if path.is_dir()]
    if folders:
        raise ConflictError(f"{', '.join(folders)} is a folder; remove it or copy elsewhere")
    if not force:
        differing = [
            str(path) for path, data in contents.items() if path.exists() and _differs(path, data)
        ]
        if differing:
            verb = "is" if len(differing) == 1 else "are"
            raise ConflictError(
                f"{', '.join(differing)} {verb} already there with other contents; "
                "--force replaces them, or copy into another folder"
            )
    destination.mkdir(parents=True, exist_ok=True)
    for path, data in contents.items():
        if not path.exists() or _differs(path, data):
            path.write_bytes(data)
    return list(contents)


def _differs(path: Path, data: bytes) -> bool:
    return not path.is_file() or path.read_bytes() != data
