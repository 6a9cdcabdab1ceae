"""Static checks of deploy/compose.yaml and deploy/Dockerfile (no container engine runs here).

For every service: its command is a real `multinet` subcommand, its mounted settings file
passes `multinet check-config` with the environment compose gives it, only the kernel-facing
workers get capabilities (and exactly the ones they need), its broker user is one the ACL
knows with a password make_passwd.py writes, and the broker runs the shipped configuration.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from services.cli import build_parser
from tests.deploy.brokerproc import (
    DEPLOY,
    PASSWD_HELPER,
    SHIPPED_ACL,
    SHIPPED_CLIENTIDS,
    SHIPPED_CONF,
)
from tests.deploy.conftest import password_variable

REPO = DEPLOY.parent
COMPOSE = DEPLOY / "compose.yaml"
#: The broker container's configuration: SHIPPED_CONF listening on the compose network.
COMPOSE_CONF = DEPLOY / "mosquitto" / "compose.conf"
DOCKERFILE = DEPLOY / "Dockerfile"

#: Every role of the deployment (docs/architecture.md).
ROLES = {
    "broker",
    "etcd",
    "nsa",
    "soap_gateway",
    "console",
    "prem-ha",
    "prem-mr",
    "monitor",
    "mobility_events",
}

#: The workers that act on their node's kernel, and the capabilities each needs: PREM programs
#: nftables/iptables and ip rules (NET_ADMIN; libiptc opens a raw socket: NET_RAW); the
#: monitor sends raw ICMP probes bound to each link (NET_RAW) and reads nl80211; the mobility
#: events service only reads raw protocol-135 and packet sockets (NET_RAW).
KERNEL_FACING: dict[str, set[str]] = {
    "prem-ha": {"NET_ADMIN", "NET_RAW"},
    "prem-mr": {"NET_ADMIN", "NET_RAW"},
    "monitor": {"NET_ADMIN", "NET_RAW"},
    "mobility_events": {"NET_RAW"},
}

#: Which settings section each service command reads, and whether its broker user is the node
#: id (the ACL's %u patterns) or a role of its own.
SECTION = {
    "nsa": "nsa",
    "soap_gateway": "soap_gateway",
    "console": "console",
    "prem-ha": "prem",
    "prem-mr": "prem",
    "monitor": "monitor",
    "mobility_events": "mobility_events",
}
NODE_USERS = {"prem-ha", "prem-mr", "monitor"}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _load_helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_passwd", PASSWD_HELPER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HELPER_USERS: tuple[str, ...] = tuple(_load_helper().DEFAULT_USERS)

#: What deploy/.env holds after make_passwd.py (test values).
ENV_FILE = {password_variable(user): f"test-password-{user}" for user in HELPER_USERS}
#: ... plus the NSA's password as a SOAP caller of the gateway (set by hand, deploy/README.md).
ENV_FILE["GATEWAY_PASSWORD_NSA"] = "test-gateway-password"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


SERVICES: dict[str, dict[str, Any]] = _compose()["services"]
#: The services that run other software than `multinet` (each from a stage of its own).
INFRASTRUCTURE = {"broker": "broker", "etcd": "etcd"}
APP_SERVICES = sorted(name for name in SERVICES if name not in INFRASTRUCTURE)


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` against `variables`."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = variables.get(name)
        # With a colon, an empty value counts as unset.
        if value is not None and (value or not (operator or "").startswith(":")):
            return value
        if operator is None:
            return ""
        if operator.endswith("-"):
            return str(argument)
        raise AssertionError(f"compose needs ${name} ({argument}) and deploy/.env lacks it")

    return _VARIABLE.sub(one, value)


def _environment(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("environment", {})
    assert isinstance(raw, dict), f"{service}: environment as a mapping, please"
    return {str(key): interpolate(str(value), ENV_FILE) for key, value in raw.items()}


def _mounts(service: str) -> list[dict[str, Any]]:
    mounts = SERVICES[service].get("volumes", [])
    for mount in mounts:
        assert isinstance(mount, dict), f"{service}: long volume syntax only ({mount!r})"
    return list(mounts)


def _bind_source(service: str, target: str) -> Path:
    """The host file bind-mounted on `target`, which must be read-only and must not be
    created as an empty directory by the engine when missing."""
    found = [m for m in _mounts(service) if m.get("target") == target]
    assert len(found) == 1, f"{service}: nothing (or several things) mounted on {target}"
    mount = found[0]
    assert mount.get("type") == "bind", f"{service}: {target} is not a bind mount"
    assert mount.get("read_only") is True, f"{service}: {target} must be mounted read-only"
    assert mount.get("bind", {}).get("create_host_path") is False, (
        f"{service}: {target}: create_host_path must be false (a missing file must fail)"
    )
    return (DEPLOY / str(mount["source"])).resolve()


def _command(service: str) -> list[str]:
    command = SERVICES[service].get("command")
    assert isinstance(command, list), f"{service}: command as an argv list, never a shell string"
    return [str(part) for part in command]


def _config_path(service: str) -> Path:
    command = _command(service)
    assert "--config" in command, f"{service}: no --config in {command}"
    return _bind_source(service, command[command.index("--config") + 1])


def test_every_role_has_a_service() -> None:
    assert set(SERVICES) == ROLES


@pytest.mark.parametrize("service", APP_SERVICES)
def test_the_command_is_a_multinet_subcommand(service: str) -> None:
    command = _command(service)
    try:
        args = build_parser().parse_args(command)
    except SystemExit as exc:
        pytest.fail(
            f"{service}: `multinet {' '.join(command)}` is not a command of services/cli.py "
            f"(argparse exit {exc.code})"
        )
    assert callable(args.func)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_the_mounted_settings_pass_check_config(service: str) -> None:
    path = _config_path(service)
    assert path.is_relative_to(DEPLOY / "config"), f"{service}: settings from deploy/config/"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MULTINET_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "check-config", str(path)],
        env=environ | _environment(service),
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, f"{service}: {path.name}: {done.stderr.strip()}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_only_kernel_facing_workers_get_capabilities(service: str) -> None:
    spec = SERVICES[service]
    assert spec.get("cap_drop") == ["ALL"], f"{service}: drop every capability first"
    assert set(spec.get("cap_add", [])) == KERNEL_FACING.get(service, set())
    assert not spec.get("privileged", False)
    assert "no-new-privileges:true" in spec.get("security_opt", [])


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_kernel_facing_workers_run_in_their_nodes_namespace(service: str) -> None:
    mode = SERVICES[service].get("network_mode")
    if service in KERNEL_FACING:
        assert mode == "host", f"{service} acts on the node's own interfaces and routing"
    else:
        assert mode is None, f"{service} needs no host network"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_only_kernel_facing_workers_run_as_root(service: str) -> None:
    user = str(SERVICES[service].get("user", ""))
    root = user.split(":", maxsplit=1)[0] in ("0", "root")
    # Capabilities added by the engine are lost on a switch to another user.
    assert root == (service in KERNEL_FACING), f"{service}: user {user!r}"


def test_the_image_runs_the_multinet_command_as_an_unprivileged_user() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "app", "the default target is the application image"
    app = stages["app"]
    assert 'ENTRYPOINT ["multinet"]' in app
    users = [line.split()[1] for line in app if line.startswith("USER ")]
    assert users, "the app image sets a USER"
    assert users[-1] not in ("root", "0"), "services that need no capability are not root"


def test_compose_builds_the_dockerfile_stages() -> None:
    stages = _dockerfile_stages()
    for name, spec in SERVICES.items():
        build = spec["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages, f"{name}: no stage {build['target']}"
        expected = INFRASTRUCTURE.get(name, "app")
        assert build["target"] == expected, name


def test_the_dockerfile_copies_only_what_exists() -> None:
    for stage, lines in _dockerfile_stages().items():
        for line in lines:
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _destination = line.split()[1:]
                for source in sources:
                    assert (REPO / source).exists(), f"stage {stage}: COPY {source}: missing"


def test_the_broker_runs_the_shipped_configuration() -> None:
    command = _command("broker")
    assert command[:1] == ["-c"], f"broker command {command}"
    assert _bind_source("broker", command[1]) == COMPOSE_CONF
    directives = _conf_directives(COMPOSE_CONF)
    assert _bind_source("broker", directives["acl_file"]) == SHIPPED_ACL
    assert _bind_source("broker", directives["plugin_opt_clientid_file"]) == SHIPPED_CLIENTIDS
    copies = [line.split() for line in _dockerfile_stages()["broker"] if line.startswith("COPY ")]
    assert ["COPY", "--from=broker-plugin", "/src/multinet_clientid.so", directives["plugin"]] in (
        copies
    ), "the broker image holds the client-id plugin where the configuration loads it"
    assert _bind_source("broker", directives["password_file"]) == DEPLOY / "mosquitto" / "passwd"
    data = [m for m in _mounts("broker") if m["type"] == "volume"]
    assert [m["target"].rstrip("/") for m in data] == [
        directives["persistence_location"].rstrip("/")
    ]
    assert directives["allow_anonymous"] == "false"
    assert directives["per_listener_settings"] == "false"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_has_an_acl_user_and_its_password_from_the_env_file(service: str) -> None:
    settings = tomllib.loads(_config_path(service).read_text(encoding="utf-8"))
    broker = settings.get("broker", {})
    user = broker.get("username")
    assert user in HELPER_USERS, f"{service}: broker user {user!r} has no password made"
    assert "password" not in broker, f"{service}: no password in a settings file"
    password = SERVICES[service]["environment"]["MULTINET_BROKER__PASSWORD"]
    assert password.startswith(f"${{{password_variable(user)}:?"), (
        f"{service}: the password of {user!r} comes from deploy/.env, required"
    )
    acl_users = re.findall(r"^user (\S+)$", SHIPPED_ACL.read_text(encoding="utf-8"), re.M)
    if service in NODE_USERS:
        assert user == settings[SECTION[service]]["node"], "a node's user is its node id"
    else:
        assert user in acl_users, f"{service}: {user!r} has no block in the ACL"


def test_the_console_is_published_on_the_loopback_only() -> None:
    ports = SERVICES["console"].get("ports", [])
    assert ports, "the console's pages are published"
    settings = tomllib.loads(_config_path("console").read_text(encoding="utf-8"))["console"]
    _host, port = settings["listen"].rsplit(":", 1)
    for mapping in ports:
        assert isinstance(mapping, str), "short syntax: HOST_IP:HOST_PORT:CONTAINER_PORT"
        host_ip, _host_port, container_port = mapping.split(":")
        assert host_ip == "127.0.0.1", f"{mapping}: the console is for this host only"
        assert container_port == port, f"{mapping}: the console listens on {port}"
    # Plain HTTP here: Secure cookies would never come back; behind TLS they must be on, and
    # the file says how.
    text = _config_path("console").read_text(encoding="utf-8")
    assert settings["secure_cookies"] is False
    assert "TLS" in text
    assert "secure_cookies = true" in text


def test_nobody_can_log_in_to_the_shipped_console_with_a_known_password() -> None:
    from services.soap_gateway.passwords import PasswordHash

    settings = tomllib.loads(_config_path("console").read_text(encoding="utf-8"))["console"]
    example = tomllib.loads((DEPLOY / "examples" / "console.toml").read_text(encoding="utf-8"))
    known = ["change-me-viewer", "change-me-operator"]
    shipped = {u["password_hash"] for u in example["console"]["users"].values()}
    for name, user in settings["users"].items():
        assert user["password_hash"] not in shipped, f"{name}: the example's hash"
        digest = PasswordHash.parse(user["password_hash"])
        for password in [*known, name]:
            assert not digest.matches(password.encode()), f"{name}: password {password!r}"


def test_the_app_image_serves_the_consoles_chart_library() -> None:
    """The wheel holds the console's own files, not node_modules: the image installs uPlot from
    the pinned lock file and links it where services/console/web.py looks for it."""
    from services.console import web

    stages = _dockerfile_stages()
    vendor = stages["console-vendor"]
    assert any("package-lock.json" in line for line in vendor if line.startswith("COPY "))
    assert any(line.startswith("RUN npm ci") for line in vendor), "npm ci: the lock's version"
    relative = web.UPLOT_DIR.relative_to(Path(web.__file__).parent).as_posix()
    app = " ".join(stages["app"])
    assert (
        "COPY --from=console-vendor /vendor/node_modules/uplot/dist /opt/multinet/uplot/dist" in app
    )
    assert f'ln -s /opt/multinet/uplot/dist "$console/{relative}"' in app
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "services/**/node_modules" in ignored, "the host's node_modules stay out of the context"


def test_secrets_stay_out_of_the_repository() -> None:
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert {".env", "mosquitto/passwd"} <= set(ignored)
    context = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in context if line and not line.startswith("#")]
    assert patterns[:1] == ["*"], "the build context admits only what the image needs"


def _dockerfile_stages() -> dict[str, list[str]]:
    """Instructions per named stage (continuation lines joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        found = re.match(r"^FROM \S+ AS (\S+)$", line)
        if found:
            current = stages.setdefault(found.group(1), [])
        elif current is not None:
            current.append(line)
    return stages


def test_the_compose_configuration_is_the_shipped_one_but_for_the_listener() -> None:
    """compose.conf binds the plain listener to every interface of the broker container's own
    namespace; the shipped mosquitto.conf to the loopback. Nothing else may differ."""
    shipped, compose = _conf_lines(SHIPPED_CONF), _conf_lines(COMPOSE_CONF)
    assert "listener 1883 127.0.0.1" in shipped, "the broker listens on the loopback by default"
    assert "listener 1883" in compose
    assert [line for line in shipped if line != "listener 1883 127.0.0.1"] == [
        line for line in compose if line != "listener 1883"
    ]


def _conf_lines(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]


def _conf_directives(path: Path = SHIPPED_CONF) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in _conf_lines(path):
        key, _, value = line.partition(" ")
        directives.setdefault(key, value)
    return directives


def test_the_nsa_leases_on_the_compose_etcd_which_keeps_its_data_and_publishes_no_port() -> None:
    etcd = SERVICES["etcd"]
    assert "ports" not in etcd, "etcd is for the compose network only"
    assert [m["target"] for m in _mounts("etcd") if m["type"] == "volume"] == ["/var/lib/etcd/data"]
    assert "--data-dir=/var/lib/etcd/data" in _command("etcd")
    assert "etcd" in SERVICES["nsa"]["depends_on"]
    settings = tomllib.loads(_config_path("nsa").read_text(encoding="utf-8"))
    advertised = next(a for a in _command("etcd") if a.startswith("--advertise-client-urls="))
    assert settings["nsa"]["coordination"]["etcd"] == advertised.split("=", 1)[1]
