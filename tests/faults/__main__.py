import asyncio
import sys

from tests.faults.suite import main

sys.exit(asyncio.run(main()))
