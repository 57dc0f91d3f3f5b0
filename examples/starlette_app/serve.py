"""Run uvicorn's command line with one fix: TCP_NODELAY on every connection with ``--workers N``.

    EXAMPLE_DB=app.db python examples/starlette_app/serve.py --app-dir examples/starlette_app \\
        --workers 2 --host 127.0.0.1 --port 8000 app:app

With ``--workers`` above 1, uvicorn binds the listening socket itself without
saying it is TCP (``proto`` 0); asyncio then leaves Nagle's algorithm on for
accepted connections, and every keep-alive response whose headers and body
go out in two writes waits about 40 ms for the client's delayed ACK (Linux).
This launcher re-labels the socket as TCP before the workers get it and
changes nothing else; once uvicorn sets ``proto`` itself it does nothing.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from uvicorn.config import Config

_bind_socket = Config.bind_socket


def _bind_tcp_socket(self: Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and sock.proto == 0:
        sock = socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())
        sock.set_inheritable(True)
    return sock


Config.bind_socket = _bind_tcp_socket  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(uvicorn.main())
