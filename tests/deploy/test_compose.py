"""deploy/compose.yaml and the Dockerfile, checked without Docker: this machine has a docker
client but no engine and no compose plugin, so ``docker compose config`` and ``docker build``
cannot run here. Instead: the Compose specification's own JSON schema (the copy vendored,
versioned, by the ``check-jsonschema`` dev dependency), then what a schema cannot see — the
files the stack mounts exist, names point at services, variables are real settings, commands
parse with the CLIs they call, nginx (``nginx -t``) and Prometheus (``promtool check
config``) accept the configurations the containers get, hadolint accepts the Dockerfile and
the wheel its build stage makes builds from the context Docker would send."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import typer.main
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

import shipyard.cli
from debian_packages import require_tools
from shipyard.settings import PREFIX, Settings, _variables

from .conftest import DEPLOY, GRAFANA, REPO, load_yaml

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
SECRETS = DEPLOY / "secrets"
BIN = Path(sys.executable).parent
# Shell operators that end a command of the init script.
SHELL_OPERATORS = {"<", ">", "||", "&&", "|", ";"}


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as check-jsonschema vendors it."""
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return dict(json.loads(vendored.joinpath("compose-spec.json").read_text()))


def schema_errors(document: Any) -> list[str]:
    """Where and why ``document`` breaks the Compose specification."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml with its YAML anchors merged, as Compose reads it."""
    return dict(load_yaml(COMPOSE))


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def builds_shipyard(service: dict[str, Any]) -> bool:
    """Whether the service runs the image of this repository's Dockerfile."""
    return "build" in service


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def shipyard_commands(service: dict[str, Any]) -> list[list[str]]:
    """Every ``shipyard …`` invocation a service runs: its command, or each line of a
    ``sh -c`` script up to the first shell operator."""
    command = command_of(service)
    if command[:2] == ["/bin/sh", "-c"]:
        found = []
        for line in command[2].splitlines():
            words = shlex.split(line.replace("$$", "$"))
            if "shipyard" in words:
                words = words[words.index("shipyard") :]
                end = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
                found.append(words[:end])
        return found
    return [command] if command[:1] == ["shipyard"] else []


def parse_shipyard(words: list[str]) -> dict[str, Any]:
    """The parameters the CLI parses from ``shipyard WORDS…`` (unknown options, bad values
    and missing arguments raise), without running the command."""
    assert words[0] == "shipyard"
    command: Any = typer.main.get_command(shipyard.cli.app)
    args = words[1:]
    while True:
        name = args.pop(0)
        assert name in command.commands, f"shipyard has no command {name!r}: {words}"
        command = command.commands[name]
        if not (hasattr(command, "commands") and args and args[0] in command.commands):
            return dict(command.make_context(name, args).params)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_refuses_what_compose_would_refuse(compose: dict[str, Any]) -> None:
    """The validation is live: a misspelt key and a condition Compose does not know fail."""
    broken = copy.deepcopy(compose)
    broken["services"]["nginx"]["depend_on"] = broken["services"]["nginx"].pop("depends_on")
    broken["services"]["init"]["depends_on"]["postgres"]["condition"] = "service_ready"
    errors = schema_errors(broken)
    assert any("depend_on" in error for error in errors), errors
    assert any("service_ready" in error for error in errors), errors


def test_no_dollar_is_left_for_compose_to_substitute() -> None:
    """Compose substitutes ``$NAME`` from the host's environment; the file uses none, so a
    shell's ``$`` is written ``$$``."""
    text = "\n".join(line.split(" #", 1)[0] for line in COMPOSE.read_text().splitlines())
    assert re.findall(r"(?<!\$)\$(?!\$)", text.replace("$$", "")) == []


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    by_command: dict[str, list[str]] = {}
    for name, service in services(compose).items():
        for words in shipyard_commands(service):
            by_command.setdefault(words[1], []).append(name)
        command = command_of(service)
        if service.get("entrypoint") == ["dask"]:
            by_command.setdefault(f"dask {command[0]}", []).append(name)
    assert len(by_command["serve"]) == 2
    assert len(by_command["stream"]) == 2
    assert by_command["monitor"] == ["monitor"]
    assert len(by_command["dask scheduler"]) == 1
    assert len(by_command["dask worker"]) == 2
    assert "pipeline" in by_command  # a fresh stack trains its first model
    images = {name: s.get("image", "") for name, s in services(compose).items()}
    for backend in ("postgres", "rabbitmq", "nginx", "prometheus", "grafana"):
        assert any(
            image.startswith(f"{backend}:") or f"/{backend}:" in image for image in images.values()
        ), backend


def test_every_service_builds_or_pulls_an_existing_image(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: pin an image tag, got {image!r}"
        if image == "shipyard:local":  # built here, never pulled: every user says how
            assert builds_shipyard(service), f"{name} uses shipyard:local without build:"
        if builds_shipyard(service):
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == REPO
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_every_mounted_file_exists_and_every_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert PurePosixPath(target).is_absolute(), f"{name}: {volume}"
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} mounts volume {source}, not declared"
                used.add(source)
    assert used == declared


def test_secrets_are_files_outside_the_repository(compose: dict[str, Any]) -> None:
    """Every secret (and the public key) is a file of deploy/secrets/, which git ignores;
    every one declared is used, every one used is declared."""
    files = {**compose["secrets"], **compose["configs"]}
    for name, entry in files.items():
        path = DEPLOY / entry["file"]
        assert path.parent == SECRETS, f"{name}: keep secrets in deploy/secrets/"
        ignored = subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", str(path)], cwd=REPO, check=False
        )
        assert ignored.returncode == 0, f"git would commit {path}"
    used = {
        (kind, entry if isinstance(entry, str) else entry["source"])
        for service in services(compose).values()
        for kind in ("secrets", "configs")
        for entry in service.get(kind, [])
    }
    declared = {("secrets", n) for n in compose["secrets"]} | {
        ("configs", n) for n in compose["configs"]
    }
    assert used == declared
    tracked = subprocess.run(
        ["git", "ls-files", str(SECRETS)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert tracked.stdout.split() in ([], ["deploy/secrets/.gitignore"])


def test_depends_on_names_services_that_can_meet_the_condition(compose: dict[str, Any]) -> None:
    every = services(compose)
    for name, service in every.items():
        for target, needs in service.get("depends_on", {}).items():
            assert target in every, f"{name} depends on {target}, which is no service"
            dependency = every[target]
            if needs["condition"] == "service_healthy":
                check = dependency.get("healthcheck", {})
                assert check.get("test"), f"{name} waits for {target} to be healthy: no check"
                assert not check.get("disable"), f"{name} waits for {target}: check disabled"
            if needs["condition"] == "service_completed_successfully":
                assert dependency.get("restart") == "no", f"{target} runs once: restart: 'no'"


def test_long_running_services_restart_and_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if service.get("restart") == "no":
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_health_checks_probe_what_each_service_serves(compose: dict[str, Any]) -> None:
    every = services(compose)
    assert every["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert every["rabbitmq"]["healthcheck"]["test"][1:3] == ["rabbitmq-diagnostics", "--quiet"]
    for name, service in every.items():
        probe = " ".join(service.get("healthcheck", {}).get("test", []))
        for words in shipyard_commands(service):
            if words[1] == "serve":
                assert f"127.0.0.1:{option(words, '--port')}/v2/health/ready" in probe, name
            if words[1] in ("stream", "monitor"):
                assert f"127.0.0.1:{option(words, '--metrics-port')}/metrics" in probe, name


def test_shipyard_commands_parse_with_the_cli(compose: dict[str, Any]) -> None:
    commands = [w for s in services(compose).values() for w in shipyard_commands(s)]
    assert len(commands) >= 9
    for words in commands:
        parse_shipyard(words)  # raises on an unknown command, option or value
    with pytest.raises(Exception, match="No such option"):
        parse_shipyard(["shipyard", "serve", "--model-names", "fraud"])


def test_dask_commands_parse_and_workers_find_the_scheduler(compose: dict[str, Any]) -> None:
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    every = services(compose)
    (scheduler,) = [n for n, s in every.items() if command_of(s)[:1] == ["scheduler"]]
    port = scheduler_cli.make_context("dask scheduler", command_of(every[scheduler])[1:]).params[
        "port"
    ]
    address = f"tcp://{scheduler}:{port}"
    workers = [s for s in every.values() if command_of(s)[:1] == ["worker"]]
    for worker in workers:
        params = worker_cli.make_context("dask worker", command_of(worker)[1:]).params
        assert params["scheduler"] == address
        assert params["nthreads"] == 1
    for service in every.values():
        if shipyard_commands(service):
            assert service["environment"]["SHIPYARD_SCHEDULER"] == address


def test_variables_are_settings_and_their_values_parse(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SHIPYARD_* variable — in an environment or the name of a secret file the
    entrypoint exports — is one the settings read, and each service's settings load."""
    known = {v for n, f in Settings.model_fields.items() for v in _variables(n, f)}
    for name, service in services(compose).items():
        if not builds_shipyard(service) or "environment" not in service:
            continue  # the Dask scheduler reads no setting
        environment = dict(service["environment"])
        exported = [
            entry["target"]
            for entry in service.get("secrets", [])
            if isinstance(entry, dict) and re.fullmatch(r"[A-Z0-9_]+", entry["target"])
        ]
        for variable in [*environment, *exported]:
            if variable.startswith(PREFIX):
                assert variable in known, f"{name}: {variable} is no setting"
        with monkeypatch.context() as patched:
            for variable in exported:
                patched.setenv(variable, "amqp://u:p@rabbitmq:5672/" if "URL" in variable else "x")
            for variable, value in environment.items():
                patched.setenv(variable, str(value))
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.home == Path("/data"), name
        if shipyard_commands(service):
            assert settings.database_url.startswith("postgresql+psycopg://"), name
            assert "@postgres:5432/" in settings.database_url, name


def test_shipyard_containers_share_the_home_volume(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if shipyard_commands(service) or command_of(service)[:1] == ["worker"]:
            assert "home:/data" in service["volumes"], name


def _materialize(service: dict[str, Any], root: Path) -> None:
    """The service's bind mounts from deploy/, copied to where the container sees them."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if not source.startswith("."):
            continue
        where = root / target.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        if (DEPLOY / source).is_dir():
            shutil.copytree(DEPLOY / source, where)
        else:
            shutil.copyfile(DEPLOY / source, where)


def test_promtool_accepts_what_the_prometheus_container_reads(
    compose: dict[str, Any], prometheus_tools: dict[str, str], tmp_path: Path
) -> None:
    prometheus = services(compose)["prometheus"]
    _materialize(prometheus, tmp_path)
    config = next(a.split("=", 1)[1] for a in prometheus["command"] if "--config.file=" in a)
    checked = subprocess.run(
        [prometheus_tools["promtool"], "check", "config", str(tmp_path / config.lstrip("/"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_prometheus_scrapes_every_process_by_its_service_name(compose: dict[str, Any]) -> None:
    targets = DEPLOY / "compose" / "prometheus" / "targets"
    assert {p.name for p in targets.glob("*.yml")} == {
        p.name for p in (DEPLOY / "prometheus" / "targets").glob("*.yml")
    }
    expected = {"servers.yml": set(), "scorers.yml": set(), "monitors.yml": set()}
    for name, service in services(compose).items():
        for words in shipyard_commands(service):
            if words[1] == "serve":
                expected["servers.yml"].add(f"{name}:{option(words, '--port')}")
                assert option(words, "--host") == "0.0.0.0", name
            if words[1] in ("stream", "monitor"):
                file = "scorers.yml" if words[1] == "stream" else "monitors.yml"
                expected[file].add(f"{name}:{option(words, '--metrics-port')}")
                assert option(words, "--metrics-host") == "0.0.0.0", name
    for file, wanted in expected.items():
        listed = {t for group in load_yaml(targets / file) for t in group["targets"]}
        assert listed == wanted, file
    (scorers,) = load_yaml(targets / "scorers.yml")
    assert scorers["labels"]["model"] == "fraud"


def test_grafana_gets_the_repository_dashboards_and_the_compose_prometheus(
    compose: dict[str, Any],
) -> None:
    grafana = services(compose)["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "shipyard.yml")
    (path,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounts["./grafana/dashboards"] == path
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    datasources = "./compose/grafana/datasources"
    assert mounts[datasources] == "/etc/grafana/provisioning/datasources"
    ours = load_yaml(DEPLOY / datasources / "shipyard.yml")
    theirs = load_yaml(GRAFANA / "provisioning" / "datasources" / "shipyard.yml")
    assert ours["datasources"][0].pop("url") == "http://prometheus:9090"
    theirs["datasources"][0].pop("url")
    assert ours == theirs  # the dashboards' uid, interval and method: only the URL differs
    assert "9090:9090" in services(compose)["prometheus"]["ports"][0]


NGINX_CONFIG = DEPLOY / "compose" / "nginx.conf"
UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)([\w.-]+):(\d+)(\s)", re.M)


def _directives(text: str) -> str:
    return "\n".join(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    )


def test_nginx_accepts_the_compose_configuration(compose: dict[str, Any], tmp_path: Path) -> None:
    """``nginx -t`` resolves every upstream host name, and server-1 and server-2 exist only
    on the compose network: the check runs on a copy whose upstream servers name 127.0.0.1
    (the names themselves are checked against the services below)."""
    nginx = services(compose)["nginx"]
    assert "./compose/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    text = NGINX_CONFIG.read_text()
    named = UPSTREAM_SERVER.findall(text)
    serving = {
        name: option(words, "--port")
        for name, service in services(compose).items()
        for words in shipyard_commands(service)
        if words[1] == "serve"
    }
    assert {host: port for _, host, port, _ in named} == serving
    assert set(nginx["depends_on"]) == set(serving)
    assert all(c["condition"] == "service_healthy" for c in nginx["depends_on"].values())
    local = tmp_path / "nginx.conf"
    local.write_text(UPSTREAM_SERVER.sub(r"\g<1>127.0.0.1:\3\4", text))
    binary = require_tools("nginx", "nginx")["nginx"]
    checked = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    listen = re.search(r"listen (\d+);", text)
    assert listen is not None
    assert nginx["ports"] == [f"127.0.0.1:{listen[1]}:{listen[1]}"]


def test_nginx_fails_over_as_the_repository_configuration_does() -> None:
    """The compose variant keeps deploy/nginx/nginx.conf's failover: the same upstream
    parameters, proxy settings and locations (comments aside)."""
    ours, theirs = NGINX_CONFIG.read_text(), (DEPLOY / "nginx" / "nginx.conf").read_text()

    def failover(text: str) -> tuple[list[str], list[str], list[str]]:
        body = _directives(text)
        upstream = re.findall(r"^server \S+ (.*)$", body, re.M)  # parameters, not hosts
        # Temporary files go where the image keeps them: not a failover setting.
        proxies = re.findall(r"^proxy_(?!temp_path)\w+ .*;$", body, re.M)
        locations = re.findall(r"^location .*?^\}", body, re.M | re.S)
        return upstream, proxies, locations

    assert failover(ours) == failover(theirs)
    assert len(failover(ours)[2]) == 3


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages[-1]


def test_hadolint_accepts_the_dockerfile() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_shipyard_as_a_user_with_a_health_check() -> None:
    parser = DockerfileParser(str(DOCKERFILE))
    assert parser.is_multistage
    final = {i["instruction"]: i["value"] for i in _final_stage(parser)}
    assert parser.baseimage.startswith("python:3.11-slim")
    user = final["USER"].split(":")[0]
    assert user.isdigit(), f"USER {final['USER']}: numeric, so Kubernetes can tell it's not root"
    assert int(user) > 0, "the image runs as root"
    assert json.loads(final["ENTRYPOINT"]) == ["shipyard"]
    assert final["EXPOSE"] == "8000"
    assert "SHIPYARD_HOME=/data" in final["ENV"].split()
    assert "/v2/health/ready" in final["HEALTHCHECK"]
    assert "--no-index" in final["RUN"]  # the runtime stage installs the build stage's wheels


def _context() -> set[str]:
    """The files Docker would send as the build context (.dockerignore applied)."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return set(exclude_paths(str(REPO), patterns, dockerfile="Dockerfile"))


def _build_stage_copies(parser: DockerfileParser) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    copies = []
    for instruction in parser.structure:
        if instruction["instruction"] in ("COPY", "ADD"):
            words = instruction["value"].split()
            assert not any(w.startswith("--from") for w in words), "copy from the context only"
            copies.append((words[:-1], words[-1]))
    return copies


def test_every_copied_file_is_in_the_build_context_and_the_wheel_builds(tmp_path: Path) -> None:
    """What the build stage copies exists and .dockerignore lets it through; then its
    `pip wheel .` step, on those files alone, makes a wheel with the whole package and the
    `shipyard` command (a few seconds: hatchling, no dependencies)."""
    context = _context()
    parser = DockerfileParser(str(DOCKERFILE))
    assert ".venv" not in {p.split("/")[0] for p in context}
    assert not any(p.startswith(("deploy/secrets", ".shipyard")) for p in context)
    stage = tmp_path / "src"
    for sources, destination in _build_stage_copies(parser):
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file"
            sent = [p for p in context if p == source or p.startswith(f"{source}/")]
            assert sent, f"COPY {source}: .dockerignore keeps it out of the context"
            for path in sent:
                # COPY puts a folder's contents, or a file, into the destination folder.
                inside = Path(path).relative_to(source) if (REPO / source).is_dir() else source
                target = stage / destination / inside
                if (REPO / path).is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(REPO / path, target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", "out", "."],
        cwd=stage,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (stage / "out").glob("shipyard_ml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {
        str(p.relative_to(REPO / "src"))
        for p in (REPO / "src" / "shipyard").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert package <= names, sorted(package - names)[:10]
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "shipyard = shipyard.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
