from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.files import write_private, write_whole


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that lets every new file be world-readable unless its writer says otherwise."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_writes_a_private_file_in_a_private_folder(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "new" / "secret"
    assert write_private(path, b"seed\n")
    assert path.read_bytes() == b"seed\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert names(path.parent) == ["secret"]  # no temporary file left behind


def test_a_strict_umask_still_leaves_the_owner_able_to_read_and_write(tmp_path: Path) -> None:
    previous = os.umask(0o277)
    try:
        write_private(tmp_path / "secret", b"x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "secret") == 0o600


def test_overwrite_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_private(path, b"a much longer first version\n")
    assert write_private(path, b"second\n")
    assert path.read_bytes() == b"second\n"
    assert mode(path) == 0o600


def test_without_overwrite_an_existing_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"theirs")
    assert not write_private(path, b"mine", overwrite=False)
    assert path.read_bytes() == b"theirs"
    assert names(tmp_path) == ["key"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "key"
    write_private(path, b"old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_private(path, b"new")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["key"]


def test_of_concurrent_creators_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    start = threading.Barrier(8)
    won: list[bytes] = []

    def create(data: bytes) -> None:
        start.wait(timeout=10)
        if write_private(path, data, overwrite=False):
            won.append(data)

    threads = [threading.Thread(target=create, args=(bytes([i]) * 32,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(won) == 1
    assert path.read_bytes() == won[0]
    assert names(tmp_path) == ["secret"]


def test_a_public_file_is_written_whole_and_readable_by_others(
    tmp_path: Path, loose_umask: None
) -> None:
    path = tmp_path / "keys" / "signing.pub"
    assert write_whole(path, b"public\n")
    assert write_whole(path, b"replaced\n")
    assert path.read_bytes() == b"replaced\n"
    assert mode(path) == 0o644
    assert not write_whole(path, b"kept?\n", overwrite=False)
    assert path.read_bytes() == b"replaced\n"
    assert names(path.parent) == ["signing.pub"]
