"""The lossy network of the test bed: two network namespaces, a veth link, nftables loss (no ROS).

```
EGO namespace (10.77.0.1/24)  <-- veth, MTU 1500 -->  INFRA namespace (10.77.0.2/24)
  nft table ip revqom_testbed, chain prerouting (priority -450, before IP defragmentation at -400):
    ip saddr INFRA counter "from_infra" jump loss                (every packet that arrives)
  chain loss:
    numgen random mod 1000 < N counter "dropped" drop            (N per mille of them lost)
```

Every packet the infrastructure sends is dropped with probability N / 1000, IP fragments one
by one (one lost fragment loses the whole UDP datagram, as on a radio link). ``from_infra``
counts what reached the ego's NIC (bytes on the wire, IP headers included). The link opens
without loss; ``NetworkLink.start_loss`` swaps in the ``loss`` chain's rule atomically (the
test bed does so when the replays start playing, so that DDS discovery, which is slower
one way under loss, does not start one side's replay before the other's).

Namespace names carry the creating process id (``revqom-tb-<pid>-<token>-ego``) so that
``remove_stale_namespaces`` can delete those of dead runs. ``NetworkLink`` creates and
always deletes its namespaces (its processes are ended first), also on errors and Ctrl-C
when used as a context manager. Needs root, iproute2 and nftables (``nft``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

NAMESPACE_PREFIX = "revqom-tb"
EGO_ADDRESS = "10.77.0.1"
INFRA_ADDRESS = "10.77.0.2"
PREFIX_LENGTH = 24
LINK_MTU = 1500
NFT_TABLE = "revqom_testbed"
DROP_PRIORITY = -450  # before conntrack's IP defragmentation (-400): fragments are seen one by one
PER_MILLE = 1000
_NAME = re.compile(rf"^{NAMESPACE_PREFIX}-(\d+)-([0-9a-f]+)-(ego|infra)$")
_KILL_WAIT_S = 5.0


class TestbedError(RuntimeError):
    """The test bed cannot be set up or read (not root, a missing tool, a failing command)."""

    __test__ = False  # not a pytest test class


class LinkCounters(NamedTuple):
    """What the infrastructure sent towards the ego, counted before the loss rule."""

    packets: int  # IP packets (fragments counted one by one) that reached the ego namespace
    bytes: int  # their IP lengths summed: bytes on the wire
    dropped_packets: int  # of those, dropped by the loss rule
    dropped_bytes: int


def loss_per_mille(loss: float) -> int:
    """A loss share in [0, 1] as the rule's whole per-mille threshold (0.1 -> 100)."""
    if not 0.0 <= loss <= 1.0:
        raise TestbedError(f"packet loss must be a share in [0, 1], got {loss}")
    return round(loss * PER_MILLE)


def namespace_names(pid: int | None = None, token: str | None = None) -> tuple[str, str]:
    """(ego, infra) namespace names of one run: ``revqom-tb-<pid>-<token>-ego`` / ``-infra``."""
    pid = os.getpid() if pid is None else pid
    token = secrets.token_hex(3) if token is None else token
    base = f"{NAMESPACE_PREFIX}-{pid}-{token}"
    return f"{base}-ego", f"{base}-infra"


def stale_namespaces(listing: str, is_alive: Callable[[int], bool]) -> list[str]:
    """Test-bed namespaces in ``ip netns list`` output whose creating process is gone."""
    stale = []
    for line in listing.splitlines():
        name = line.split(" ", 1)[0].strip()
        match = _NAME.match(name)
        if match and not is_alive(int(match.group(1))):
            stale.append(name)
    return stale


def loss_ruleset(infra_address: str) -> str:
    """The nftables ruleset (``nft -f`` text) of the ego namespace: counters, an empty loss chain."""
    return (
        f"table ip {NFT_TABLE} {{\n"
        "\tcounter from_infra { }\n"
        "\tcounter dropped { }\n"
        "\tchain loss {\n"
        "\t}\n"
        "\tchain prerouting {\n"
        f"\t\ttype filter hook prerouting priority {DROP_PRIORITY}; policy accept;\n"
        f'\t\tip saddr {infra_address} counter name "from_infra" jump loss\n'
        "\t}\n"
        "}\n"
    )


def loss_rule(per_mille: int) -> str:
    """``nft -f`` text that makes the ``loss`` chain drop ``per_mille`` of its packets (atomic)."""
    if not 0 <= per_mille <= PER_MILLE:
        raise TestbedError(f"per-mille loss must be in [0, {PER_MILLE}], got {per_mille}")
    # numgen yields 0..999: "< 1000" is out of nft's range, so total loss drops without it
    chance = "" if per_mille == PER_MILLE else f"numgen random mod {PER_MILLE} < {per_mille} "
    return (
        f"flush chain ip {NFT_TABLE} loss\n"
        f'add rule ip {NFT_TABLE} loss {chance}counter name "dropped" drop\n'
    )


def parse_counters(nft_json: str) -> LinkCounters:
    """``nft -j list counters table ip revqom_testbed`` output -> ``LinkCounters``."""
    try:
        items = json.loads(nft_json)["nftables"]
        found = {i["counter"]["name"]: i["counter"] for i in items if "counter" in i}
        arrived, dropped = found["from_infra"], found["dropped"]
        return LinkCounters(
            int(arrived["packets"]), int(arrived["bytes"]), int(dropped["packets"]), int(dropped["bytes"])
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TestbedError(f"unexpected nft counter listing ({exc!r}): {nft_json[:300]}") from exc


def dds_profile_xml(peers: Sequence[str], *, max_initial_peers_range: int = 16,
                    buffer_bytes: int = 4 * 1024 * 1024) -> str:
    """A Fast DDS default participant profile: UDPv4 only (no shared memory), unicast discovery.

    ``peers``: every namespace's address, its own included (participants in one namespace find
    each other through it too); each address is probed on the ports of participant ids 0 to
    ``max_initial_peers_range - 1``. Socket buffers of ``buffer_bytes`` (capped by the
    kernel's ``net.core.rmem_max``) let point clouds cross loopback UDP inside a namespace.
    """
    locators = "\n".join(
        f"          <locator><udpv4><address>{escape(p)}</address></udpv4></locator>" for p in peers
    )
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<!-- Generated by revqom's test bed: UDPv4 only, unicast discovery to {', '.join(peers)}. -->
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>revqom_testbed_udp</transport_id>
      <type>UDPv4</type>
      <sendBufferSize>{buffer_bytes}</sendBufferSize>
      <receiveBufferSize>{buffer_bytes}</receiveBufferSize>
      <maxInitialPeersRange>{max_initial_peers_range}</maxInitialPeersRange>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="revqom_testbed" is_default_profile="true">
    <rtps>
      <builtin>
        <initialPeersList>
{locators}
        </initialPeersList>
      </builtin>
      <userTransports>
        <transport_id>revqom_testbed_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def _command(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run a setup command; its stdout, or ``TestbedError`` with its stderr."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestbedError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def unavailable_reason() -> str | None:
    """Why the test bed cannot run on this machine, in one line; None when it can (root, ``ip``
    and ``nft`` on PATH, and a network namespace can be created)."""
    if os.geteuid() != 0:
        return "the test bed needs root (network namespaces and nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"'{tool}' not found: apt-get install -y {package} (tools/bootstrap.sh does as root)"
    probe, _ = namespace_names(token="0")
    try:
        _command(["ip", "netns", "add", probe])
    except TestbedError as exc:
        return f"cannot create a network namespace here: {str(exc).splitlines()[0]}"
    _command(["ip", "netns", "delete", probe])
    return None


def check_requirements() -> None:
    """``TestbedError`` with ``unavailable_reason()`` when the test bed cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        raise TestbedError(reason)


def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces that dead test-bed runs left behind; their names."""
    stale = stale_namespaces(_command(["ip", "netns", "list"]), _pid_alive)
    for name in stale:
        _end_processes(name)
        _command(["ip", "netns", "delete", name])
        log.info("removed the stale test-bed namespace %s", name)
    return stale


def _namespace_pids(name: str) -> list[int]:
    try:
        return [int(p) for p in _command(["ip", "netns", "pids", name]).split()]
    except TestbedError:
        return []


def _end_processes(name: str) -> None:
    """SIGKILL whatever still runs in namespace ``name`` (the launch runner normally ended it)."""
    pids = _namespace_pids(name)
    for pid in pids:
        log.warning("ending pid %d left in namespace %s", pid, name)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _KILL_WAIT_S
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p)]
        time.sleep(0.05)


@dataclass
class NetworkLink:
    """Two namespaces joined by a veth pair, with the loss rule on the ego side.

    ``with NetworkLink(loss=0.1) as link:`` sets everything up (no loss yet: ``start_loss``);
    ``link.exec_prefix(ns)`` is the argv that runs a command inside a namespace;
    ``link.counters()`` reads the nft counters.
    Leaving the block (normally, by an exception or Ctrl-C) deletes both namespaces.
    """

    loss: float = 0.0
    ego_address: str = EGO_ADDRESS
    infra_address: str = INFRA_ADDRESS
    mtu: int = LINK_MTU

    def __post_init__(self) -> None:
        self.per_mille = loss_per_mille(self.loss)
        self.ego, self.infra = namespace_names()
        self._created: list[str] = []

    def __enter__(self) -> NetworkLink:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        check_requirements()
        remove_stale_namespaces()
        for name in (self.ego, self.infra):
            _command(["ip", "netns", "add", name])
            self._created.append(name)
        _command(["ip", "link", "add", "ego0", "netns", self.ego, "type", "veth",
                  "peer", "name", "infra0", "netns", self.infra])
        for name, device, address in ((self.ego, "ego0", self.ego_address),
                                      (self.infra, "infra0", self.infra_address)):
            _command(["ip", "-n", name, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", device])
            _command(["ip", "-n", name, "link", "set", device, "mtu", str(self.mtu), "up"])
            _command(["ip", "-n", name, "link", "set", "lo", "up"])
        _command([*self.exec_prefix(self.ego), "nft", "-f", "-"], stdin=loss_ruleset(self.infra_address))
        log.info("test-bed link %s (%s) <-> %s (%s), MTU %d", self.ego, self.ego_address, self.infra,
                 self.infra_address, self.mtu)

    def start_loss(self) -> None:
        """From now on drop ``loss`` of the infrastructure's packets (the link opens without)."""
        _command([*self.exec_prefix(self.ego), "nft", "-f", "-"], stdin=loss_rule(self.per_mille))
        log.info("loss on: %d per mille of the infrastructure's packets", self.per_mille)

    def exec_prefix(self, namespace: str) -> list[str]:
        """argv prefix that runs a command in ``namespace``."""
        return ["ip", "netns", "exec", namespace]

    def counters(self) -> LinkCounters:
        return parse_counters(
            _command([*self.exec_prefix(self.ego), "nft", "-j", "list", "counters", "table", "ip", NFT_TABLE])
        )

    def close(self) -> None:
        """End what still runs in the namespaces and delete them (idempotent)."""
        while self._created:
            name = self._created.pop()
            _end_processes(name)
            try:
                _command(["ip", "netns", "delete", name])
            except TestbedError as exc:
                log.error("could not delete namespace %s: %s", name, exc)
