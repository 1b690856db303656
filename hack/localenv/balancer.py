"""A loopback TCP balancer standing in for a Kubernetes Service in front of several operator processes.

Why: the API server calls the admission webhooks at one address. In a cluster that is a Service whose
endpoints are the operator pods; here every process listens on its own loopback port, and this
balancer is the one address. Each incoming connection goes to the next backend in turn; a backend
that refuses the connection (its process is gone) is skipped at once, as kube-proxy skips an endpoint
that is no longer ready. TLS passes through untouched: the processes present their own certificate.

A request already in flight on a process that is killed fails (the API server does not retry a
webhook call); every request after that reaches a live process.

    python hack/localenv/balancer.py --listen 127.0.0.1:9443 --backend 127.0.0.1:9444 --backend 127.0.0.1:9445

Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

CONNECT_TIMEOUT_S = 2.0
"""A backend that neither accepts nor refuses within this time is skipped (a frozen process)."""
CHUNK = 64 * 1024


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._backends = backends
        self._turn = itertools.cycle(range(len(backends)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for offset in range(len(self._backends)):
            host, port = self._backends[(first + offset) % len(self._backends)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                continue
        return None

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            client_writer.close()  # no backend: the API server sees a refused call, as with no endpoints
            return
        reader, writer = upstream
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.handle, listen[0], listen[1], reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="host:port to accept connections on")
    parser.add_argument("--backend", action="append", required=True, help="host:port of a process (repeat)")
    args = parser.parse_args()
    asyncio.run(serve(_address(args.listen), [_address(b) for b in args.backend]))


if __name__ == "__main__":
    main()
