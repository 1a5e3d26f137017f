"""Retry strategies for failed jobs, as in Agenda 6 (``agenda/utils/backoff``) but in seconds.

A strategy is called after each failure with the attempt number (the job's failCount, 1 after the first
failure), the error and the job; it returns how many seconds to wait before the retry, or ``None`` to
give up::

    agenda.define("send email", send_email, backoff=backoff.exponential(delay=1.0, max_retries=5))
    agenda.define("sync", sync, backoff=backoff.when(lambda error, job: isinstance(error, TimeoutError),
                                                     backoff.standard()))

Any callable with the same signature works as a strategy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, Protocol

from agendapy.errors import InvalidInput

__all__ = [
    "MAX_DELAY",
    "BackoffStrategy",
    "aggressive",
    "combine",
    "constant",
    "exponential",
    "linear",
    "relaxed",
    "standard",
    "when",
]

# A delay no datetime arithmetic will overflow on; an uncapped exponential reaches it eventually.
MAX_DELAY: Final = timedelta(days=365).total_seconds()


class BackoffStrategy(Protocol):
    """Decides the wait before a retry: seconds, or ``None`` to stop retrying."""

    def __call__(self, attempt: int, error: BaseException, job: Any) -> float | None:
        """Return the seconds to wait before retry number ``attempt``, or None to give up."""
        ...


class _Growth:
    """A delay that grows with the attempt number, capped, jittered and limited to ``max_retries``."""

    def __init__(
        self,
        kind: str,
        base: Callable[[int], float],
        *,
        shown: dict[str, float | int | None],
        max_retries: int,
        max_delay: float | None,
        jitter: float,
    ) -> None:
        self._kind = kind
        self._base = base
        self._shown = shown
        self.max_retries = max_retries
        self.max_delay = max_delay
        self.jitter = jitter

    def __call__(self, attempt: int, error: BaseException, job: Any) -> float | None:
        """Return the delay for this attempt in seconds, or None once attempts exceed max_retries."""
        if attempt > self.max_retries:
            return None
        try:
            delay = self._base(max(attempt, 1))
        except OverflowError:
            delay = math.inf
        cap = MAX_DELAY if self.max_delay is None else min(self.max_delay, MAX_DELAY)
        return _jittered(min(delay, cap), self.jitter)

    def __repr__(self) -> str:
        options = {**self._shown, "max_retries": self.max_retries}
        if self.max_delay is not None:
            options["max_delay"] = self.max_delay
        if self.jitter:
            options["jitter"] = self.jitter
        shown = ", ".join(f"{name}={value!r}" for name, value in options.items())
        return f"backoff.{self._kind}({shown})"


def _jittered(delay: float, jitter: float) -> float:
    """Spread ``delay`` by up to ±``jitter`` of itself, never below zero, rounded to milliseconds."""
    if jitter <= 0:
        return delay
    # Spread retries of many jobs that failed together (thundering herd), as Agenda does.
    spread = delay * jitter * (random.random() * 2 - 1)
    return max(0.0, round(delay + spread, 3))


def _seconds(name: str, value: object, *, minimum: float = 0.0) -> float:
    """Validate a non-negative, finite number of seconds (or a timedelta)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(name, value, "expected a finite number of seconds")
    if value < minimum:
        raise InvalidInput(name, value, f"must be at least {minimum:g}")
    return float(value)


def _common(max_retries: object, max_delay: object, jitter: object) -> tuple[int, float | None, float]:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidInput("max_retries", max_retries, "expected an int of 0 or more")
    cap = None if max_delay is None or max_delay == math.inf else _seconds("max_delay", max_delay)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise InvalidInput("jitter", jitter, "expected a fraction between 0 and 1")
    return max_retries, cap, float(jitter)


def constant(
    delay: float | timedelta = 1.0,
    *,
    max_retries: int = 3,
    max_delay: float | timedelta | None = None,
    jitter: float = 0.0,
) -> BackoffStrategy:
    """Wait the same ``delay`` seconds before each retry (1 s, 1 s, 1 s by default)."""
    wait = _seconds("delay", delay)
    retries, cap, spread = _common(max_retries, max_delay, jitter)
    return _Growth(
        "constant",
        lambda attempt: wait,
        shown={"delay": wait},
        max_retries=retries,
        max_delay=cap,
        jitter=spread,
    )


def linear(
    delay: float | timedelta = 1.0,
    *,
    increment: float | timedelta | None = None,
    max_retries: int = 3,
    max_delay: float | timedelta | None = None,
    jitter: float = 0.0,
) -> BackoffStrategy:
    """Wait ``delay + increment * (attempt - 1)`` seconds; ``increment`` defaults to ``delay``."""
    wait = _seconds("delay", delay)
    step = wait if increment is None else _seconds("increment", increment)
    retries, cap, spread = _common(max_retries, max_delay, jitter)
    return _Growth(
        "linear",
        lambda attempt: wait + step * (attempt - 1),
        shown={"delay": wait, "increment": step},
        max_retries=retries,
        max_delay=cap,
        jitter=spread,
    )


def exponential(
    delay: float | timedelta = 1.0,
    *,
    factor: float = 2.0,
    max_retries: int = 3,
    max_delay: float | timedelta | None = None,
    jitter: float = 0.0,
) -> BackoffStrategy:
    """Wait ``delay * factor ** (attempt - 1)`` seconds (1 s, 2 s, 4 s by default)."""
    wait = _seconds("delay", delay)
    growth = _seconds("factor", factor, minimum=1.0)
    retries, cap, spread = _common(max_retries, max_delay, jitter)
    return _Growth(
        "exponential",
        lambda attempt: wait * growth ** (attempt - 1),
        shown={"delay": wait, "factor": growth},
        max_retries=retries,
        max_delay=cap,
        jitter=spread,
    )


class _Combined:
    """Asks each strategy in turn; the first that does not give up decides."""

    def __init__(self, strategies: tuple[BackoffStrategy, ...]) -> None:
        self.strategies = strategies

    def __call__(self, attempt: int, error: BaseException, job: Any) -> float | None:
        """Return the first non-None delay of the strategies, or None."""
        for strategy in self.strategies:
            delay = strategy(attempt, error, job)
            if delay is not None:
                return delay
        return None

    def __repr__(self) -> str:
        return f"backoff.combine({', '.join(map(repr, self.strategies))})"


def combine(*strategies: BackoffStrategy) -> BackoffStrategy:
    """Return a strategy that uses the first of ``strategies`` that returns a delay."""
    for strategy in strategies:
        if not callable(strategy):
            raise InvalidInput("strategies", strategy, "expected a backoff strategy (a callable)")
    return _Combined(strategies)


class _When:
    """Retries with ``strategy`` only for failures that ``condition`` accepts."""

    def __init__(self, condition: Callable[[BaseException, Any], bool], strategy: BackoffStrategy) -> None:
        self.condition = condition
        self.strategy = strategy

    def __call__(self, attempt: int, error: BaseException, job: Any) -> float | None:
        """Return the strategy's delay when the condition holds, else None."""
        return self.strategy(attempt, error, job) if self.condition(error, job) else None

    def __repr__(self) -> str:
        name = getattr(self.condition, "__qualname__", repr(self.condition))
        return f"backoff.when({name}, {self.strategy!r})"


def when(condition: Callable[[BaseException, Any], bool], strategy: BackoffStrategy) -> BackoffStrategy:
    """Return a strategy that retries with ``strategy`` only when ``condition(error, job)`` is true."""
    if not callable(condition):
        raise InvalidInput("condition", condition, "expected a callable (error, job) -> bool")
    if not callable(strategy):
        raise InvalidInput("strategy", strategy, "expected a backoff strategy (a callable)")
    return _When(condition, strategy)


def aggressive() -> BackoffStrategy:
    """Quick retries for transient failures: 0.1 s, 0.2 s, 0.4 s, then give up."""
    return exponential(0.1, factor=2.0, max_retries=3)


def standard() -> BackoffStrategy:
    """Balanced retries: 1, 2, 4, 8, 16 s (±10 %), then give up."""
    return exponential(1.0, factor=2.0, max_retries=5, jitter=0.1)


def relaxed() -> BackoffStrategy:
    """Gentle retries for rate-limited services: 5, 15, 45, 135 s (±10 %), then give up."""
    return exponential(5.0, factor=3.0, max_retries=4, jitter=0.1)
