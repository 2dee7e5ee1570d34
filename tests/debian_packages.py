"""Debian tools a test needs (``promtool``, ``prometheus``): found on PATH, else installed.

``require_tools("prometheus", "prometheus", "promtool")`` returns the binaries' paths. When
one is missing and this process runs as root with ``apt-get``, it installs the package
(``apt-get update`` first when apt does not know it yet) without its recommended packages
and without starting its services: a package such as ``prometheus`` would otherwise start
a system Prometheus on :9090 (and a node exporter on :9100) that outlives the tests. When
the tool still cannot be had, the test fails if ``CI`` is set and skips elsewhere, with the
command that installs it. One install per package per test session.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
# invoke-rc.d and deb-systemd-invoke ask this script whether a package may start its
# service; 101 means "no". Docker images ship it; a machine without one gets it for the
# length of an install.
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
LOCK_WAIT_S = 300  # another test session (or apt itself) may hold dpkg's lock a while
INSTALL_TIMEOUT_S = 900


def _missing(what: str, package: str, detail: str = "") -> None:
    message = f"{what} is not installed; install it with: apt-get install -y {package}"
    if detail:
        message += f"\n{detail}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def _services_held() -> Iterator[None]:
    """While installing, packages may not start their services (unless a policy exists)."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# Written by Shipyard's tests while installing.\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-o", f"DPkg::Lock::Timeout={LOCK_WAIT_S}", *args]
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


@functools.cache
def _install(package: str) -> str:
    """Install ``package``; the end of apt's output when that failed, else ""."""
    with _services_held():
        done = _apt_get("install", "-y", "--no-install-recommends", package)
        if done.returncode != 0:  # e.g. a fresh machine whose package lists are empty
            _apt_get("update")
            done = _apt_get("install", "-y", "--no-install-recommends", package)
    if done.returncode == 0:
        return ""
    return "\n".join((done.stdout + done.stderr).splitlines()[-15:])


def require_tools(package: str, *binaries: str) -> dict[str, str]:
    """Paths of ``binaries``, installing Debian's ``package`` first when one is missing."""
    found = {name: shutil.which(name) for name in binaries}
    if all(found.values()):
        return {name: str(path) for name, path in found.items()}
    missing = ", ".join(name for name, path in found.items() if path is None)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _missing(missing, package, "(not installed automatically: that needs root and apt-get)")
    detail = _install(package)
    found = {name: shutil.which(name) for name in binaries}
    if not all(found.values()):
        _missing(missing, package, detail)
    return {name: str(path) for name, path in found.items()}
