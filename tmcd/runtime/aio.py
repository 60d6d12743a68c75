"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task (if any) and wait until it has finished.

    The task's own CancelledError is absorbed; a cancellation of the caller while it waits is
    re-raised (``Task.cancelling()`` tells the two apart), so the caller still stops.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
