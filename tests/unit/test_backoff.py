"""Retry strategies: Agenda 6's backoff-test-suite numbers (items 100-117), in seconds."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agendapy import backoff
from agendapy.backoff import BackoffStrategy
from agendapy.errors import InvalidInput

ERROR = RuntimeError("boom")


def loose(value: object) -> Any:
    """Pass a deliberately wrong argument past the type checker."""
    return value


def is_timeout(error: BaseException, job: Any) -> bool:
    return isinstance(error, TimeoutError)


def delays(strategy: BackoffStrategy, attempts: int) -> list[float | None]:
    return [strategy(attempt, ERROR, None) for attempt in range(1, attempts + 1)]


def approx(values: list[float | None]) -> list[Any]:
    return [None if value is None else pytest.approx(value) for value in values]


def test_constant_waits_the_same_then_gives_up() -> None:
    assert delays(backoff.constant(1.0, max_retries=3), 4) == [1.0, 1.0, 1.0, None]


def test_constant_is_capped_by_max_delay() -> None:
    assert delays(backoff.constant(5.0, max_delay=2.0), 1) == [2.0]


def test_linear_grows_by_the_increment() -> None:
    assert delays(backoff.linear(1.0, increment=1.0, max_retries=4), 5) == [1.0, 2.0, 3.0, 4.0, None]


def test_linear_increment_defaults_to_the_delay() -> None:
    assert delays(backoff.linear(0.5), 3) == [0.5, 1.0, 1.5]


def test_linear_is_capped_by_max_delay() -> None:
    assert delays(backoff.linear(1.0, increment=2.0, max_delay=3.0), 3) == [1.0, 3.0, 3.0]


def test_exponential_multiplies_by_the_factor() -> None:
    strategy = backoff.exponential(0.1, factor=2, max_retries=5)
    assert delays(strategy, 6) == approx([0.1, 0.2, 0.4, 0.8, 1.6, None])


def test_exponential_is_capped_by_max_delay() -> None:
    strategy = backoff.exponential(0.1, factor=2, max_retries=5, max_delay=0.5)
    assert delays(strategy, 5) == approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_defaults_are_agendas() -> None:
    assert delays(backoff.constant(), 4) == [1.0, 1.0, 1.0, None]
    assert delays(backoff.linear(), 4) == [1.0, 2.0, 3.0, None]
    assert delays(backoff.exponential(), 4) == [1.0, 2.0, 4.0, None]


def test_jitter_spreads_delays_within_the_fraction() -> None:
    results = delays(backoff.constant(1.0, max_retries=200, jitter=0.5), 200)
    assert all(value is not None and 0.5 <= value <= 1.5 for value in results)
    assert len(set(results)) > 10


def test_jitter_never_goes_negative_and_keeps_milliseconds() -> None:
    results = delays(backoff.constant(0.001, max_retries=100, jitter=1.0), 100)
    assert all(value is not None and value >= 0 and round(value, 3) == value for value in results)


def test_combine_takes_the_first_strategy_that_retries() -> None:
    strategy = backoff.combine(backoff.constant(0.1, max_retries=2), backoff.exponential(0.25, max_retries=4))
    assert delays(strategy, 5) == approx([0.1, 0.1, 1.0, 2.0, None])


def test_combine_of_nothing_never_retries() -> None:
    assert delays(backoff.combine(), 1) == [None]


def test_when_retries_only_for_matching_errors() -> None:
    strategy = backoff.when(lambda error, job: "timeout" in str(error), backoff.constant(1.0))
    assert strategy(1, TimeoutError("connection timeout"), None) == 1.0
    assert strategy(1, ValueError("bad input"), None) is None


def test_when_sees_the_job() -> None:
    strategy = backoff.when(lambda error, job: job == "important", backoff.constant(1.0))
    assert strategy(1, ERROR, "important") == 1.0
    assert strategy(1, ERROR, "other") is None


def test_presets() -> None:
    assert delays(backoff.aggressive(), 4) == approx([0.1, 0.2, 0.4, None])
    first = backoff.standard()(1, ERROR, None)
    assert first is not None
    assert 0.9 <= first <= 1.1
    assert backoff.standard()(6, ERROR, None) is None
    fourth = backoff.relaxed()(4, ERROR, None)
    assert fourth is not None
    assert 135 * 0.9 <= fourth <= 135 * 1.1
    assert backoff.relaxed()(5, ERROR, None) is None


def test_a_plain_function_is_a_strategy() -> None:
    planned = [0.1, 0.1, 0.2]

    def custom(attempt: int, error: BaseException, job: Any) -> float | None:
        return planned[attempt - 1] if attempt <= len(planned) else None

    strategy: BackoffStrategy = backoff.combine(custom)
    assert delays(strategy, 4) == [0.1, 0.1, 0.2, None]


def test_zero_retries_never_retry() -> None:
    assert delays(backoff.exponential(max_retries=0), 1) == [None]


def test_uncapped_growth_stays_representable() -> None:
    delay = backoff.exponential(1.0, factor=10, max_retries=10**6)(5000, ERROR, None)
    assert delay == backoff.MAX_DELAY
    assert timedelta(seconds=delay) == timedelta(days=365)


def test_timedeltas_are_accepted_as_delays() -> None:
    strategy = backoff.linear(
        timedelta(seconds=2), increment=timedelta(milliseconds=500), max_delay=timedelta(seconds=3)
    )
    assert delays(strategy, 4) == [2.0, 2.5, 3.0, None]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: backoff.constant(-1), "delay"),
        (lambda: backoff.constant(math.nan), "delay"),
        (lambda: backoff.constant(math.inf), "delay"),
        (lambda: backoff.constant(True), "delay"),
        (lambda: backoff.constant(loose("1")), "delay"),
        (lambda: backoff.constant(max_retries=-1), "max_retries"),
        (lambda: backoff.constant(max_retries=loose(1.5)), "max_retries"),
        (lambda: backoff.constant(max_retries=True), "max_retries"),
        (lambda: backoff.constant(max_delay=-1), "max_delay"),
        (lambda: backoff.constant(jitter=1.5), "jitter"),
        (lambda: backoff.constant(jitter=-0.1), "jitter"),
        (lambda: backoff.constant(jitter=math.nan), "jitter"),
        (lambda: backoff.linear(increment=-1), "increment"),
        (lambda: backoff.exponential(factor=0.5), "factor"),
        (lambda: backoff.combine(loose(5)), "strategies"),
        (lambda: backoff.when(loose(5), backoff.constant()), "condition"),
        (lambda: backoff.when(lambda error, job: True, loose(5)), "strategy"),
    ],
)
def test_bad_arguments_are_rejected_naming_them(make: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        make()
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_strategies_have_readable_reprs() -> None:
    assert repr(backoff.standard()) == "backoff.exponential(delay=1.0, factor=2.0, max_retries=5, jitter=0.1)"
    assert (
        repr(backoff.constant(2, max_delay=1)) == "backoff.constant(delay=2.0, max_retries=3, max_delay=1.0)"
    )
    assert repr(backoff.linear(1)) == "backoff.linear(delay=1.0, increment=1.0, max_retries=3)"
    combined = backoff.combine(backoff.aggressive(), backoff.when(is_timeout, backoff.constant()))
    assert repr(combined) == (
        "backoff.combine(backoff.exponential(delay=0.1, factor=2.0, max_retries=3), "
        "backoff.when(is_timeout, backoff.constant(delay=1.0, max_retries=3)))"
    )


@given(
    delay=st.floats(min_value=0, max_value=1e6),
    factor=st.floats(min_value=1, max_value=100),
    max_retries=st.integers(min_value=0, max_value=50),
    max_delay=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    jitter=st.floats(min_value=0, max_value=1),
    attempt=st.integers(min_value=1, max_value=10**4),
)
def test_exponential_stays_within_its_bounds(
    delay: float, factor: float, max_retries: int, max_delay: float | None, jitter: float, attempt: int
) -> None:
    strategy = backoff.exponential(
        delay, factor=factor, max_retries=max_retries, max_delay=max_delay, jitter=jitter
    )
    result = strategy(attempt, ERROR, None)
    if attempt > max_retries:
        assert result is None
        return
    assert result is not None
    cap = min(max_delay if max_delay is not None else math.inf, backoff.MAX_DELAY)
    assert 0 <= result <= cap * (1 + jitter) + 0.001
