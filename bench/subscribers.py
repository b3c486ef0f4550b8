"""N subscribers of a router's GET /events that read and discard everything, for the
bench's `xrouter-watched` target: what live watching costs the router.

    python bench/subscribers.py HOST PORT N

One process, plain sockets and select: the subscribers themselves cost little CPU, so
what the figures show is the router publishing and mitmproxy relaying the N streams.
Prints "ready" once every subscriber got its first event.
"""

from __future__ import annotations

import selectors
import socket
import sys


def main() -> int:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    selector = selectors.DefaultSelector()
    waiting = set()
    for _ in range(count):
        sock = socket.create_connection((host, port))
        sock.sendall(f"GET /events HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        waiting.add(sock)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            data = sock.recv(65536)
            if not data:
                return 1  # the router went away
            if sock in waiting and b"event: stats" in data:
                waiting.discard(sock)
                if not waiting:
                    print("ready", flush=True)


if __name__ == "__main__":
    sys.exit(main())
