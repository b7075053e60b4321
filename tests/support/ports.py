"""A free loopback port for a server a test (or a benchmark) starts: the one copy."""

from __future__ import annotations

import random
import socket

HOST = "127.0.0.1"


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free 127.0.0.1 port in [low, high], below the ephemeral range: multi-model-server's front-end refuses
    port numbers above 32767 ("Invalid port number"), and ephemeral ports usually are. Any other server
    (torchrun's MASTER_PORT, a published container port, a registry) takes these ports as well."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")
