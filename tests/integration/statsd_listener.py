"""A real StatsD listener on loopback: a UDP socket and a thread that keeps every line it receives.

StatsD is plain text over UDP (``name[,tag=value...]:value|type[|@rate]``, one metric a line,
several lines a datagram), so the listener needs no library: it is the receiving end of what
Airflow's stats client (the ``statsd`` package) sends. The integration scenario points the whole
cluster at it (``[metrics] statsd_on``) and reads what the workers and the triggerer sent.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class StatsdLine:
    """One received metric: its name, its tags (influxdb-style, when the sender adds them), value and type."""

    name: str
    tags: dict[str, str]
    value: float
    kind: str

    @classmethod
    def parse(cls, line: str) -> StatsdLine | None:
        head, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        name, *pairs = head.split(",")
        try:
            number = float(value)
        except ValueError:
            return None
        tags = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        return cls(name, tags, number, kind.split("|")[0])


class StatsdListener:
    """``with StatsdListener() as listener``: ``listener.port`` to send to, ``listener.lines()`` what came."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._lines: list[StatsdLine] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._socket.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed = [StatsdLine.parse(text) for text in datagram.decode("utf-8", "replace").splitlines() if text]
            with self._lock:
                self._lines.extend(line for line in parsed if line is not None)

    def lines(self, prefix: str = "") -> list[StatsdLine]:
        """Every line received so far whose name starts with ``prefix``."""
        with self._lock:
            return [line for line in self._lines if line.name.startswith(prefix)]
