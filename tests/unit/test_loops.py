"""The supervised-loop helper every background loop of a worker runs under."""

from __future__ import annotations

import asyncio

import pytest

from agendapy.loops import Loop, StopLoop, supervise


async def test_a_failing_round_is_reported_and_the_loop_goes_on() -> None:
    stop = asyncio.Event()
    rounds: list[int] = []
    errors: list[tuple[str, int]] = []
    pauses: list[int] = []
    recovered: list[bool] = []

    async def round_() -> None:
        rounds.append(1)
        if len(rounds) in (1, 2):
            raise RuntimeError(f"round {len(rounds)}")
        if len(rounds) == 4:
            stop.set()

    async def on_error(error: Exception, failures: int) -> None:
        errors.append((str(error), failures))

    async def then(failures: int) -> None:
        pauses.append(failures)

    loop = Loop("test", round_, then=then, on_error=on_error, on_recovery=lambda: recovered.append(True))
    await asyncio.wait_for(supervise(loop, stop), 5)
    assert errors == [("round 1", 1), ("round 2", 2)]
    # The failures in a row reach ``then`` (for a growing back-off) and reset after a success.
    assert pauses == [1, 2, 0]
    assert recovered == [True]
    assert len(rounds) == 4


async def test_stop_loop_ends_the_loop_without_a_report() -> None:
    errors: list[Exception] = []

    async def round_() -> None:
        raise StopLoop

    async def on_error(error: Exception, failures: int) -> None:
        errors.append(error)

    await asyncio.wait_for(supervise(Loop("test", round_, on_error=on_error), asyncio.Event()), 5)
    assert errors == []


async def test_a_failing_report_does_not_end_the_loop() -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    async def round_() -> None:
        rounds.append(1)
        if len(rounds) == 3:
            stop.set()
        raise RuntimeError("down")

    async def on_error(error: Exception, failures: int) -> None:
        raise ValueError("the reporter is broken too")

    await asyncio.wait_for(supervise(Loop("test", round_, on_error=on_error), stop), 5)
    assert len(rounds) == 3


async def test_a_cancel_ends_the_loop() -> None:
    started = asyncio.Event()

    async def round_() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(supervise(Loop("test", round_), asyncio.Event()))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
