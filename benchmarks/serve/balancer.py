"""nginx in front of the benchmark's server, for ``serve.py``'s "OIP JSON through nginx".

The configuration is the shipped ``deploy/nginx/nginx.conf`` with its listen port, its
upstream replicas and its number of worker processes rewritten, so the benchmark measures the
file users deploy (keep-alive to the replica, ``proxy_buffering off``, the retry rules), not a
tuned copy. nginx runs from a prefix folder, in the foreground, as a ``Child``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from shipyard.children import Child, free_port, http_ok

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf"
LISTEN = re.compile(r"^(\s*listen )127\.0\.0\.1:\d+;$", re.M)
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+((?: [^;\n]*)?);\n", re.M)
WORKERS = re.compile(r"^worker_processes \w+;$", re.M)


def balancer_config(listen: int, replicas: Sequence[int], workers: int) -> str:
    """The shipped configuration listening on ``listen``, one upstream server line per
    replica port (with the options of the file's first one), ``workers`` processes."""
    text = CONFIG.read_text()
    servers = UPSTREAM_SERVER.findall(text)
    if len(LISTEN.findall(text)) != 1 or not servers or len(WORKERS.findall(text)) != 1:
        raise RuntimeError(f"{CONFIG} no longer has the lines this benchmark rewrites")
    indent, options = servers[0]
    block = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in replicas)
    lines = iter([block])
    text = UPSTREAM_SERVER.sub(lambda _: next(lines, ""), text)
    text = WORKERS.sub(f"worker_processes {workers};", text)
    return LISTEN.sub(rf"\g<1>127.0.0.1:{listen};", text)


def nginx_path() -> str:
    """Debian's nginx, or exit saying how to install it (as the benchmark does for wrk)."""
    # Debian puts it in /usr/sbin, which a user's PATH may lack.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        sys.exit("nginx is not installed; this benchmark needs it: apt-get install nginx")
    return found


@contextlib.contextmanager
def balancer(
    folder: Path, replicas: Sequence[int], *, workers: int, cores: str | None
) -> Iterator[tuple[str, Child]]:
    """nginx (``workers`` processes, pinned to ``cores`` when given) in front of the
    replicas' ports; its URL and process, once ``/nginx/health`` answers."""
    prefix = folder / f"nginx-{free_port()}"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(balancer_config(port, replicas, workers))
    command = [nginx_path(), "-p", str(prefix), "-c", str(config), "-e", "logs/error.log"]
    command += ["-g", "daemon off;"]
    if cores is not None:
        command = ["taskset", "-c", cores, *command]
    url = f"http://127.0.0.1:{port}"
    child = Child(
        command,
        log=prefix / "logs" / "stderr.log",
        extra_logs=[prefix / "logs" / "error.log"],
        new_session=True,
        name="nginx",
    )
    with child.start(http_ok(f"{url}/nginx/health"), timeout_s=30):
        yield url, child
