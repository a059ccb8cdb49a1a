"""Several hosts on this machine: network namespaces joined by a bridge (`ip netns`, veth pairs;
iproute2), each with an address of its own in a /24 no one else uses, so servers and kernels talk
over real interfaces, and a test can cut one host's link (`ip link set ... down`) and mend it.

The test process stays in the machine's own namespace and reaches every host through the bridge's
address (.1). Nothing here routes anywhere else: the hosts have no default route.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

IP = shutil.which("ip") or "/usr/sbin/ip"


def ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, text=True)


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class Hosts:
    """`with Hosts(["a", "b"]) as hosts:` hosts.address("a"), hosts.prefix("a") (the command prefix
    that runs a program there), hosts.cut("a") and hosts.mend("a")."""

    def __init__(self, names: list[str]):
        self.tag = secrets.token_hex(2)
        self.subnet = f"10.231.{int(self.tag, 16) % 200 + 20}"
        self.names = names
        self.bridge = f"cxbr{self.tag}"

    def __enter__(self) -> Hosts:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for number, name in enumerate(self.names, start=2):
            ns, outside, inside = self.namespace(name), self._veth(name), f"{self._veth(name)}i"
            ip("netns", "add", ns)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", ns)
            ip("link", "set", outside, "master", self.bridge)
            ip("link", "set", outside, "up")
            ip("-n", ns, "addr", "add", f"{self.subnet}.{number}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        for name in self.names:
            subprocess.run([IP, "netns", "del", self.namespace(name)], capture_output=True)
            subprocess.run([IP, "link", "del", self._veth(name)], capture_output=True)
        subprocess.run([IP, "link", "del", self.bridge], capture_output=True)

    def namespace(self, name: str) -> str:
        return f"cx{self.tag}{name}"

    def _veth(self, name: str) -> str:
        return f"cx{self.tag}{name}"[:15]

    def address(self, name: str) -> str:
        return f"{self.subnet}.{self.names.index(name) + 2}"

    def prefix(self, name: str) -> list[str]:
        return [IP, "netns", "exec", self.namespace(name)]

    def cut(self, name: str) -> None:
        """The host's cable pulled: nothing reaches it, nothing leaves it (its processes live on)."""
        ip("link", "set", self._veth(name), "down")

    def mend(self, name: str) -> None:
        ip("link", "set", self._veth(name), "up")
