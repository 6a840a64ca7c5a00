"""The service's app (vantio_appliance.ingest.App) under granian's RSGI, for bench/ingest.py.

granian served the ledger's socket until 2026-12-08, when the service moved to
its own HTTP/1.1 server (vantio_appliance/_internal/http1.py). bench/ingest.py
runs the same app under granian beside `vantio serve`, on a ledger of its own,
so that the choice stays measured rather than remembered. granian's scope and
protocol objects offer what ``App.handle`` reads (method, path, headers; the
body by ``proto()`` or by iteration; ``response_bytes``).

    python -m granian --interface rsgi --workers 1 --loop uvloop \
        --uds SOCK --working-dir bench granian_app:app
    (VANTIO_LEDGER_DIR=ledger, VANTIO_NO_FLAGS=1 without chattr)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vantio_appliance.ingest import App


class GranianApp:
    """RSGI around ``App``: granian's worker opens the ledger, serves, then closes it."""

    def __init__(self) -> None:
        self.app = App()

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.app.start(Path(os.environ["VANTIO_LEDGER_DIR"]),
                       os.environ.get("VANTIO_NO_FLAGS") != "1", loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.app.stop()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto == "http":
            await self.app.handle(scope, proto)


app = GranianApp()
