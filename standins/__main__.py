"""Run the SMS provider stand-in on its own, e.g. for the demo:
``python -m standins --port 8090 --sid ACdemo --token demo-token``."""

from __future__ import annotations

import argparse
import asyncio

from standins.sms_provider import SmsProviderStandIn


async def serve(port: int, sid: str, token: str) -> None:
    provider = SmsProviderStandIn(sid, token)
    url = await provider.start(port)
    print(f"SMS provider stand-in at {url} (account {sid})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await provider.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--sid", default="ACstandin")
    parser.add_argument("--token", default="standin-token")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.sid, args.token))


if __name__ == "__main__":
    main()
