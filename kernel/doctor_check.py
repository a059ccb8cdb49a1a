"""One finding of `cortex doctor`: what was checked, how it stands, and what to do about it.
Plugins return these from their `cortex_doctor` hook."""

from __future__ import annotations

import socket
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warning", "fail"


@dataclass
class DoctorCheck:
    name: str
    state: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""


def port_check(listen: str, name: str, fix: str, running: bool = False) -> DoctorCheck:
    """Whether HOST:PORT can be bound here (or is held by the running kernel)."""
    if running:
        return DoctorCheck(name, OK, f"a kernel is serving on {listen}")
    host, port = listen.rsplit(":", 1)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as sock:
            sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        return DoctorCheck(name, FAIL, f"{listen}: {exc.strerror}", fix)
    return DoctorCheck(name, OK, f"{listen} is free")


def listener_check(plugin: str, setting: str, listen: str, running: bool) -> list[DoctorCheck]:
    """A plugin's own listener ([plugins.PLUGIN] SETTING = listen) is free to bind; nothing to check
    when it is off, on port 0, or held by the running kernel."""
    if running or not listen or listen.endswith(":0"):
        return []
    return [port_check(listen, f"port ({plugin})", f"stop what holds it, or set [plugins.{plugin}] {setting}")]
