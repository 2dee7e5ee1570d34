"""deploy/keepalived/: Debian's keepalived accepts the floating-address configuration
(``keepalived -t``), with this machine's network interface in place of the file's ``eth0``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from debian_packages import require_tools

from .conftest import DEPLOY

CONFIG = DEPLOY / "keepalived" / "keepalived.conf"


def _interface() -> str:
    """A network interface of this machine VRRP may use (not loopback)."""
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not names:
        pytest.fail("this machine has no network interface but loopback")
    return "eth0" if "eth0" in names else names[0]


def _check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    keepalived = require_tools("keepalived", "keepalived")["keepalived"]
    config = tmp_path / "keepalived.conf"
    config.write_text(text)
    return subprocess.run(
        [keepalived, "-t", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keepalived_accepts_the_configuration(tmp_path: Path) -> None:
    text = CONFIG.read_text()
    assert "interface eth0" in text
    checked = _check(text.replace("interface eth0", f"interface {_interface()}"), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "track_script" in text  # the address follows nginx's health, not just the machine
    assert "http://127.0.0.1:8080/nginx/health" in text  # deploy/nginx's health route


def test_keepalived_refuses_a_configuration_it_cannot_run(tmp_path: Path) -> None:
    """The check is real: an interface this machine does not have is an error."""
    checked = _check(CONFIG.read_text().replace("interface eth0", "interface nosuch0"), tmp_path)
    assert checked.returncode != 0
    assert "nosuch0" in checked.stdout + checked.stderr
