"""Stopping a component's background tasks (shared by every daemon's run loops)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel every task, wait for each to finish, and empty the list.

    A task's own failure is not re-raised here: the component reports failures where they
    happen, and stopping must always complete.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
