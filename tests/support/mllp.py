"""An MLLP sender for tests: raw bytes or framed messages out, ACKs in."""

from __future__ import annotations

import asyncio
import ssl

import hl7

VT, FS_CR = b"\x0b", b"\x1c\x0d"


class Sender:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def raw(self, payload: bytes) -> None:
        self.writer.write(payload)
        await self.writer.drain()

    async def send(self, payload: bytes) -> None:
        await self.raw(VT + payload + FS_CR)

    async def ack(self) -> hl7.Message:
        block = await asyncio.wait_for(self.reader.readuntil(FS_CR), 30)
        assert block.startswith(VT)
        return hl7.parse(block[1:-2].decode())


async def connect(port: int | None, tls: ssl.SSLContext | None = None) -> Sender:
    assert port is not None
    return Sender(*await asyncio.open_connection("127.0.0.1", port, ssl=tls))


def msa(ack: hl7.Message) -> tuple[str, str]:
    """MSA-1 acknowledgment code and MSA-2 the control id it answers."""
    return str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))
