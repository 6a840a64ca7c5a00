"""The batch helpers' pool (``_internal.helpers``) with real spawned processes: a task comes
back, a helper that dies or hangs fails its task with HelpersGone (never a wait without
end), and new helpers take over."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import pytest

from vantio_appliance._internal.helpers import Helpers, HelpersGone


async def _with_helpers(timeout: float, check: Callable[[Helpers], Awaitable[None]]) -> None:
    helpers = Helpers(1, asyncio.get_running_loop(), timeout=timeout)
    try:
        await check(helpers)
    finally:
        helpers.close()


def test_a_task_runs_in_another_process() -> None:
    async def check(h: Helpers) -> None:
        assert await h.run(os.getpid) != os.getpid()
        assert await h.run(sum, [1, 2, 3]) == 6
        assert h.restarts == 0
    asyncio.run(_with_helpers(30, check))


def test_a_helper_that_dies_with_its_task_fails_it_and_is_replaced() -> None:
    async def check(h: Helpers) -> None:
        with pytest.raises(HelpersGone):
            await h.run(os.abort)
        assert h.restarts == 1
        assert await h.run(sum, [2, 2]) == 4
    asyncio.run(_with_helpers(30, check))


def test_a_helper_that_stops_answering_fails_its_task_after_the_timeout() -> None:
    async def check(h: Helpers) -> None:
        started = time.monotonic()
        with pytest.raises(HelpersGone):
            await h.run(time.sleep, 60)
        assert time.monotonic() - started < 10
        assert h.restarts == 1
        assert await h.run(sum, [3, 3]) == 6
    asyncio.run(_with_helpers(1, check))


def test_every_task_of_a_broken_pool_fails_none_waits_on() -> None:
    """Tasks queued behind one that kills its helper all end (HelpersGone or a result),
    well before the timeout."""
    async def check(h: Helpers) -> None:
        started = time.monotonic()
        results = await asyncio.gather(h.run(os.abort), *(h.run(sum, [i]) for i in range(8)),
                                       return_exceptions=True)
        assert time.monotonic() - started < 20
        assert isinstance(results[0], HelpersGone)
        assert all(r == i or isinstance(r, HelpersGone)
                   for i, r in enumerate(results[1:])), results
        assert await h.run(sum, [5]) == 5
    asyncio.run(_with_helpers(25, check))
