"""deploy/nginx/: Debian's nginx accepts the configuration, run unprivileged from a prefix
folder, and it says what failover needs (checked on nginx's own dump of it, ``nginx -T``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from debian_packages import require_tools

from .conftest import DEPLOY

CONFIG = DEPLOY / "nginx" / "nginx.conf"


def _nginx(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    nginx = require_tools("nginx", "nginx")["nginx"]
    return subprocess.run(
        [nginx, "-p", str(prefix), "-c", str(CONFIG), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nginx_accepts_the_configuration_from_a_prefix_folder(tmp_path: Path) -> None:
    checked = _nginx(tmp_path, "-t")
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
    assert "test is successful" in checked.stderr


def test_the_replicas_fail_over_and_inference_is_retried_as_idempotent(tmp_path: Path) -> None:
    dumped = _nginx(tmp_path, "-T")
    assert dumped.returncode == 0, dumped.stderr
    text = dumped.stdout
    upstream = re.search(r"upstream shipyard \{(.*?)\}", text, re.S)
    assert upstream is not None
    servers = re.findall(r"server 127\.0\.0\.1:\d+ max_fails=\d+ fail_timeout=\d+s;", upstream[1])
    assert len(servers) >= 2
    assert "keepalive 64;" in upstream[1]
    inference = re.search(r"location ~ \^/\(v2/models.*?\{(.*?)\}", text, re.S)
    assert inference is not None
    assert "non_idempotent" in inference[1]  # an inference POST may go to the next replica
    default = re.search(r"location / \{(.*?)\}", text, re.S)
    assert default is not None
    assert "proxy_next_upstream error timeout;" in default[1]  # a promotion is never resent
    assert 'proxy_set_header Connection "";' in text  # keep-alive to the replicas
