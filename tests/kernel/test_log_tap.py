"""log_tap: a bridge hears the log events of the work it started (tasks included), and nothing else."""

from __future__ import annotations

import asyncio
import io

import structlog

from cortex.kernel.sdk import configure_logging, log_tap


def test_a_tap_hears_its_calls_and_their_tasks_and_not_the_rest():
    saved = structlog.get_config()
    configure_logging("info", fmt="json", stream=io.StringIO())
    try:
        _hear()
    finally:
        structlog.configure(**saved)


def _hear():
    log = structlog.get_logger("test")
    heard: list[dict] = []

    async def nested():
        log.warning("in.task", n=2)

    async def main():
        log.info("before")
        with log_tap(heard.append):
            log.info("inside", n=1)
            log.debug("too.quiet")  # below the kernel's level: nobody hears it
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
            await asyncio.create_task(nested())
        log.info("after")
        await asyncio.gather(asyncio.create_task(nested()))

    asyncio.run(main())
    assert [(e["event"], e["level"]) for e in heard] == [("inside", "info"), ("failed", "error"), ("in.task", "warning")]
    assert heard[0]["n"] == 1 and "exc_info" not in heard[1]
