"""A provider's failures at the connection level, in front of any stand-in (SMTP, SMS, webhook).

``FaultyPort`` is a TCP proxy: the service is pointed at it instead of the stand-in. It
passes bytes through, or refuses connections (its listening socket is closed, so a connect
gets RST: what a provider that is down looks like), or answers slowly (every chunk the
stand-in sends back waits ``delay`` seconds: a provider under load). The protocol stays the
stand-in's own, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "refuse", "slow"]


class FaultyPort:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(
            self._connected, host, port or self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def refuse(self) -> None:
        """Close the listening socket: new connections are refused until ``passes()``."""
        self.mode = "refuse"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def slow(self, delay: float) -> None:
        await self.passes()
        self.mode, self.delay = "slow", delay

    async def passes(self) -> None:
        """Back to normal, on the same port."""
        self.mode, self.delay = "pass", 0.0
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.refuse()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, slow=False)),
            asyncio.create_task(self._pipe(up_reader, writer, slow=True)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._pipes.discard(task)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if slow and self.mode == "slow":
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
