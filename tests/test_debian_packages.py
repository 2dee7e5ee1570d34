"""tests/debian_packages.py: a missing Debian tool fails the test in CI, skips it elsewhere,
and says how to install it."""

from __future__ import annotations

import shutil

import pytest

import debian_packages
from debian_packages import require_tools


def test_tools_on_the_path_are_found_without_installing() -> None:
    assert require_tools("coreutils", "ls", "cat") == {
        "ls": shutil.which("ls"),
        "cat": shutil.which("cat"),
    }


@pytest.mark.parametrize(
    ("in_ci", "outcome"), [(True, pytest.fail.Exception), (False, pytest.skip.Exception)]
)
def test_a_tool_that_cannot_be_installed_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, in_ci: bool, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(debian_packages, "IN_CI", in_ci)
    monkeypatch.setattr(debian_packages.os, "geteuid", lambda: 1000)  # not root: no apt-get
    with pytest.raises(outcome) as raised:
        require_tools("no-such-package", "ls", "no-such-tool-on-any-path")
    message = str(raised.value)
    # Only what is missing is named, then how to install it.
    assert message.startswith("no-such-tool-on-any-path is not installed; install it with: ")
    assert "apt-get install -y no-such-package" in message
