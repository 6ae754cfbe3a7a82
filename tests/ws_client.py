"""An independent WebSocket client (Python's `websockets`, strict about RFC 6455) against a
ricochet WebSocket echo: `ws_client.py URL CA_FILE`. Prints `ok ...` when every check held.

Checks: text and binary echoed with their type, an empty message, a fragmented message, a 1 MiB
message, ping answered with the same payload, and the close code echoed.
"""

import asyncio
import ssl
import sys

import websockets


async def main(url: str, ca: str) -> None:
    context = None
    if url.startswith("wss://"):
        context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=context, max_size=None, compression=None) as ws:
        await ws.send("hello, κόσμε")
        assert await ws.recv() == "hello, κόσμε"
        await ws.send(b"\x00\x01\xff binary")
        assert await ws.recv() == b"\x00\x01\xff binary"
        await ws.send("")
        assert await ws.recv() == ""
        await ws.send(["frag-", "men", "ted"])
        assert await ws.recv() == "frag-mented"
        big = bytes(range(256)) * 4096
        await ws.send(big)
        assert await ws.recv() == big
        pong = await ws.ping(b"ping payload")
        await asyncio.wait_for(pong, 10)
        await ws.close(code=4001, reason="done")
        assert ws.close_code == 4001, ws.close_code
    print("ok", url)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
