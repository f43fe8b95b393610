"""deploy/: the systemd units, the proxies and the production config agree with the relay.

The units' key settings are always checked by parsing them. Where this machine has the
tools, the files also go through them: `systemd-analyze verify` and `security` (Debian's
systemd package; this machine and CI have it), `caddy validate` and `nginx -t`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.durations import parse_duration_s

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ("relay.service", "relay-backup.service", "relay-backup.timer")
INSTALLED_RELAY = "/opt/relay/bin/relay"  # where docs/deploy.md installs it
# The most exposure `systemd-analyze security` may find in relay.service, in its tenths
# (0 safe .. 100 unsafe): 1.3 today. Loosening the sandbox must be a decision.
MAX_EXPOSURE = 20


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> every value given (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (DEPLOY / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_example() -> dict[str, str]:
    pairs = (
        line.partition("=")
        for line in (DEPLOY / "relay.env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    return {name: value for name, _, value in pairs}


def production_config() -> Config:
    return load_config(DEPLOY / "relay.toml", env_example())


def test_the_service_unit_keeps_its_sandbox_and_its_stop() -> None:
    service = unit("relay.service")["Service"]

    def one(key: str) -> str:
        (value,) = service[key]
        return value

    assert one("ExecStart").startswith(f"{INSTALLED_RELAY} serve --config /etc/relay/relay.toml")
    assert one("DynamicUser") == "yes" and one("User") == "relay"
    assert one("StateDirectory") == "relay"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == ""  # no capabilities at all
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"][0] == "@system-service"
    assert one("UMask") == "0077"
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert one("EnvironmentFile") == "/etc/relay/relay.env"
    # Requests in flight, then attempts in flight, each get shutdown_grace: systemd must
    # not kill the relay before both have had it.
    grace_s = production_config().delivery.shutdown_grace_s
    assert parse_duration_s(one("TimeoutStopSec")) > 2 * grace_s


def test_the_backup_runs_as_the_relay_beside_it_from_a_daily_timer() -> None:
    backup = unit("relay-backup.service")
    service = backup["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["User"] == ["relay"] and service["DynamicUser"] == ["yes"]
    assert "relay" in service["StateDirectory"][0].split()  # it reads the store
    assert (
        f"{INSTALLED_RELAY} backup --force --config /etc/relay/relay.toml"
        in (service["ExecStart"][0])
    )
    assert service["UMask"] == ["0077"]
    timer = unit("relay-backup.timer")["Timer"]
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"]


def test_the_production_config_is_valid_and_lives_in_the_state_directory() -> None:
    config = production_config()
    state = Path("/var/lib") / unit("relay.service")["Service"]["StateDirectory"][0]
    assert Path(config.storage.sqlite_path).parent == state
    referenced = set(re.findall(r'"env:(\w+)"', (DEPLOY / "relay.toml").read_text()))
    assert referenced == set(env_example())  # every secret has its line, and no more


def test_the_proxies_match_the_relays_port_path_and_body_bound() -> None:
    server = production_config().server
    caddy = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")

    assert f"reverse_proxy {server.host}:{server.port}" in caddy
    assert f"proxy_pass http://{server.host}:{server.port};" in nginx
    assert re.search(rf"@relay path {re.escape(server.path)}\b", caddy)
    assert re.search(rf"location ~ \^/\({re.escape(server.path.lstrip('/'))}\|", nginx)
    assert server.max_body_bytes == 1024 * 1024
    assert re.search(r"max_size 1MiB\b", caddy)
    assert re.search(r"client_max_body_size 1m;", nginx)
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header} " in nginx


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """The units as shipped, with ExecStart pointed at the relay installed for this run
    (verify checks the program exists, and /opt/relay is where a server installs it)."""
    relay = Path(sys.executable).parent / "relay"
    for name in UNITS:
        text = (DEPLOY / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace(INSTALLED_RELAY, str(relay)), encoding="utf-8")

    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert verified.returncode == 0, verified.stderr
    ours = [line for line in verified.stderr.splitlines() if "relay" in line]
    assert ours == []
    exposure = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={MAX_EXPOSURE}",
            str(tmp_path / "relay.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert exposure.returncode == 0, exposure.stdout[-2000:]


@pytest.mark.skipif(shutil.which("caddy") is None, reason="no caddy here")
def test_caddy_validates_the_caddyfile(tmp_path: Path) -> None:
    checked = subprocess.run(
        [
            str(shutil.which("caddy")),
            "validate",
            "--adapter",
            "caddyfile",
            "--config",
            str(DEPLOY / "Caddyfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx here")
def test_nginx_accepts_the_server_block(tmp_path: Path) -> None:
    """nginx -t on the block as shipped, with this machine's paths for what it opens."""
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("relay.example.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "pair.pem"))
    block = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    block = re.sub(r"/etc/letsencrypt/live/[^;]+\.pem", str(tmp_path / "pair.pem"), block)
    block = block.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "relay.conf").write_text(block, encoding="utf-8")
    temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("proxy", "fastcgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log {tmp_path}/access.log; client_body_temp_path {tmp_path}/body;"
        f" {temp} uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;"
        f" include {tmp_path}/relay.conf; }}\n",
        encoding="utf-8",
    )
    checked = subprocess.run(
        [str(shutil.which("nginx")), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
