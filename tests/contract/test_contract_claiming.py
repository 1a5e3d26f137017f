"""Store contract: claiming (the lock filter and order) and the writes fenced by a claim's lease."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from contract_helpers import MINUTE, claim, claim_request, job, ms, save, utcnow

from agendapy import Job
from agendapy.errors import JobNotFound
from agendapy.store.base import JobCriteria, JobStore


async def saved(store: JobStore, name: str = "work", **fields: object) -> Job:
    return await save(store, job(name, **fields))


async def reread(store: JobStore, item: Job) -> Job:
    assert item.id is not None
    found = await store.get_job(item.id)
    assert found is not None
    return found


# -- the claim filter ------------------------------------------------------------------------------


async def names_in_order(store: JobStore, spec: list[tuple[str, int]]) -> dict[str, list[Job]]:
    """Jobs due in the order given: ``[("a", 3), ("b", 2)]`` makes a's three, then b's two."""
    now, made, step = utcnow(), {}, 0
    total = sum(count for _, count in spec)
    for name, count in spec:
        for _ in range(count):
            made.setdefault(name, []).append(
                await saved(store, name, next_run_at=now - (total - step) * timedelta(seconds=1))
            )
            step += 1
    return made


async def test_claim_order_is_next_run_then_priority(store: JobStore) -> None:
    now = utcnow()
    late = await saved(store, data="late", next_run_at=now - MINUTE)
    early = await saved(store, data="early", next_run_at=now - 2 * MINUTE)
    urgent = await saved(store, data="urgent", next_run_at=now - MINUTE, priority=10)
    one_by_one = [(await claim(store, "work"))[0].id for _ in range(3)]
    assert one_by_one == [early.id, urgent.id, late.id]
    assert await claim(store, "work") == []


async def test_batched_claim_follows_the_same_order_and_limit(store: JobStore) -> None:
    now = utcnow()
    made = [await saved(store, data=i, next_run_at=now - (5 - i) * MINUTE) for i in range(5)]
    first = await claim(store, "work", limit=3)
    assert [j.id for j in first] == [m.id for m in made[:3]]
    assert len({j.lease.token for j in first if j.lease}) == 1
    second = await claim(store, "work", limit=3)
    assert [j.id for j in second] == [m.id for m in made[3:]]
    assert await claim(store, "work", limit=3) == []


async def test_claim_takes_only_the_requested_names(store: JobStore) -> None:
    mine = await saved(store, "mine")
    await saved(store, "other")
    claimed = await claim(store, ["mine", "absent"], limit=5)
    assert [j.id for j in claimed] == [mine.id]


async def test_claim_locks_and_leases(store: JobStore) -> None:
    item = await saved(store, next_run_at=utcnow() - MINUTE)
    now = utcnow()
    [claimed] = await claim(store, "work", token="tok-1", now=now, owner="w9")
    assert claimed.id == item.id
    assert claimed.locked_at == now and claimed.last_modified_by == "w9"
    assert claimed.lease is not None and claimed.lease.token == "tok-1" and claimed.lease.locked_at == now
    back = await reread(store, item)
    assert back.locked_at == now and back.last_modified_by == "w9"


async def test_claim_without_an_owner_keeps_last_modified_by(store: JobStore) -> None:
    item = await saved(store)
    await claim(store, "work", owner=None)
    assert (await reread(store, item)).last_modified_by == "tester"


async def test_a_locked_job_is_not_claimed_twice(store: JobStore) -> None:
    await saved(store)
    assert len(await claim(store, "work")) == 1
    assert await claim(store, "work") == []
    assert await claim(store, "work", limit=10) == []


async def test_claim_window_is_next_scan_at_inclusive(store: JobStore) -> None:
    now = utcnow()
    soon = await saved(store, next_run_at=now + timedelta(seconds=2))
    assert await claim(store, "work", now=now, window=timedelta(seconds=1)) == []
    [claimed] = await claim(store, "work", now=now, window=timedelta(seconds=2))
    assert claimed.id == soon.id


async def test_a_job_without_next_run_is_not_claimed(store: JobStore) -> None:
    await saved(store, next_run_at=None)
    assert await claim(store, "work", window=timedelta(days=3650)) == []


async def test_an_expired_lock_is_claimed_again_whatever_its_next_run(store: JobStore) -> None:
    now = utcnow()
    await saved(store, next_run_at=now + timedelta(days=1))
    [first] = await claim(store, "work", now=now - 20 * MINUTE, window=timedelta(days=2), token="old")
    assert await claim(store, "work", now=now, lifetime=30 * MINUTE) == []  # not expired yet
    [again] = await claim(store, "work", now=now, lifetime=10 * MINUTE, token="new")
    assert again.id == first.id and again.locked_at == now
    assert again.lease is not None and again.lease.token == "new"


async def test_a_worker_never_claims_a_job_it_holds_again(store: JobStore) -> None:
    """A job whose lock looks expired to its own holder (its heartbeat came late) is left to it: claiming
    it again would run it a second time beside the run the worker has. Other workers still take it,
    and the holder's other claims go on."""
    now = utcnow()
    mine = await saved(store, next_run_at=None, locked_at=now - 20 * MINUTE, last_run_at=now - 20 * MINUTE)
    other = await saved(store, next_run_at=None, locked_at=now - 20 * MINUTE, last_run_at=now - 20 * MINUTE)
    due = await saved(store, next_run_at=now - MINUTE)
    claimed = await claim(store, "work", limit=5, now=now, held=[mine.id, "not-a-job-id"], token="again")
    assert {j.id for j in claimed} == {other.id, due.id}
    assert (await reread(store, mine)).locked_at == ms(now - 20 * MINUTE)
    [taken] = await claim(store, "work", now=now, held=[other.id, due.id], owner="worker-2")
    assert taken.id == mine.id


async def test_a_crashed_run_without_next_run_comes_first(store: JobStore) -> None:
    """A job whose worker died mid-run (its start cleared nextRunAt, its lock expired) sorts before any
    due job, as MongoDB sorts a null nextRunAt before every date: a claim with room for one takes it."""
    now = utcnow()
    crashed = await saved(store, next_run_at=None, locked_at=now - 20 * MINUTE, last_run_at=now - 20 * MINUTE)
    due = await saved(store, next_run_at=now - 30 * MINUTE, priority=10)
    assert [j.id for j in await claim(store, "work", now=now, lifetime=10 * MINUTE)] == [crashed.id]
    assert [j.id for j in await claim(store, "work", now=now, lifetime=10 * MINUTE)] == [due.id]


async def test_lock_deadline_is_inclusive_and_per_name(store: JobStore) -> None:
    now = utcnow()
    locked_at = now - 10 * MINUTE
    a = await saved(store, "a", next_run_at=locked_at - MINUTE)
    b = await saved(store, "b", next_run_at=locked_at - MINUTE)
    assert len(await claim(store, ["a", "b"], limit=2, now=locked_at)) == 2
    deadlines = {"a": locked_at, "b": locked_at - timedelta(milliseconds=1)}
    claimed = await claim(store, ["a", "b"], limit=2, now=now, deadlines=deadlines)
    assert [j.id for j in claimed] == [a.id]
    assert b.id is not None


async def test_a_batch_takes_unlocked_and_expired_jobs_together(store: JobStore) -> None:
    """One batch holds jobs of both branches of the claim filter (unlocked and due; locked past each
    name's own deadline); a lock still live is left alone."""
    now = utcnow()
    locked_at = now - 10 * MINUTE
    expired_a = await saved(store, "a", next_run_at=locked_at - 3 * MINUTE)
    expired_b = await saved(store, "b", next_run_at=locked_at - 2 * MINUTE)
    live_b = await saved(store, "b", next_run_at=locked_at - MINUTE)
    assert len(await claim(store, ["a", "b"], limit=2, now=locked_at, token="old")) == 2
    assert len(await claim(store, "b", now=now - MINUTE, token="live")) == 1
    unlocked = await saved(store, "a", next_run_at=now - MINUTE)
    # a's locks expire after 5 minutes, b's after 8: both old locks are past, b's live one is not.
    deadlines = {"a": now - 5 * MINUTE, "b": now - 8 * MINUTE}
    claimed = await claim(store, ["a", "b"], limit=10, now=now, deadlines=deadlines, token="new")
    assert {j.id for j in claimed} == {expired_a.id, expired_b.id, unlocked.id}
    assert all(j.lease is not None and j.lease.token == "new" and j.locked_at == now for j in claimed)
    still = await reread(store, live_b)
    assert still.locked_at == ms(now - MINUTE)


async def test_disabled_jobs_are_never_claimed(store: JobStore) -> None:
    now = utcnow()
    item = await saved(store, next_run_at=now - 30 * MINUTE)
    assert len(await claim(store, "work", now=now - 20 * MINUTE)) == 1
    assert await store.set_disabled(JobCriteria(id=item.id), True) == 1
    assert await claim(store, "work", now=now, lifetime=MINUTE) == []
    assert await store.set_disabled(JobCriteria(id=item.id), False) == 1
    assert len(await claim(store, "work", now=now, lifetime=MINUTE)) == 1


async def test_claim_after_release_and_after_the_final_state_save(store: JobStore) -> None:
    await saved(store)
    [claimed] = await claim(store, "work")
    await store.release([claimed])
    [again] = await claim(store, "work")
    again.locked_at = None
    again.next_run_at = utcnow() - MINUTE
    assert await store.save_state(again)
    assert len(await claim(store, "work")) == 1


# -- fenced state writes ---------------------------------------------------------------------------


async def test_save_state_writes_the_worker_fields(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    ran = utcnow()
    claimed.last_run_at = ran
    claimed.last_finished_at = ran + timedelta(seconds=1)
    claimed.fail_count, claimed.fail_reason, claimed.failed_at = 2, "boom", ran
    claimed.progress = 50.5
    claimed.checkpoint_state = {"page": 3}
    claimed.next_run_at = None
    assert await store.save_state(claimed)
    back = await reread(store, item)
    assert (back.last_run_at, back.last_finished_at, back.failed_at) == (
        ran,
        ran + timedelta(seconds=1),
        ran,
    )
    assert (back.fail_count, back.fail_reason, back.progress) == (2, "boom", 50.5)
    assert back.checkpoint_state == {"page": 3} and back.next_run_at is None
    assert back.locked_at is not None


async def test_save_state_of_some_fields_only(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    claimed.progress = 10
    claimed.fail_count = 9
    assert await store.save_state(claimed, fields=["progress"])
    back = await reread(store, item)
    assert back.progress == 10 and back.fail_count == 0


async def test_the_final_save_releases_the_lock(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    claimed.locked_at = None
    assert await store.save_state(claimed)
    assert (await reread(store, item)).locked_at is None
    assert not await store.save_state(claimed)  # the lease ended with that write


async def test_a_stolen_lock_refuses_every_write_of_the_old_holder(store: JobStore) -> None:
    now = utcnow()
    item = await saved(store, next_run_at=now - 30 * MINUTE)
    [old] = await claim(store, "work", now=now - 20 * MINUTE, token="old")
    [new] = await claim(store, "work", now=now, lifetime=10 * MINUTE, token="new")
    old.progress = 99
    old.locked_at = None
    assert not await store.save_state(old)
    assert not await store.save_state(old, fields=["progress"])
    assert not await store.save_state_batched(old)
    assert await store.renew_locks([old], now + MINUTE) == [old]
    await store.release([old], reschedule_at=now + timedelta(days=1))
    back = await reread(store, item)
    assert back.locked_at == now and back.progress is None and back.next_run_at == ms(now - 30 * MINUTE)
    new.progress = 1
    assert await store.save_state(new)
    assert (await reread(store, item)).progress == 1


async def test_a_node_style_takeover_changing_only_locked_at_also_fences(store: JobStore) -> None:
    # Node Agenda takes a lock over without a token; the same token with another lockedAt must not match.
    item = await saved(store)
    [claimed] = await claim(store, "work", token="same")
    [again] = await claim(store, "work", token="same", now=utcnow() + 20 * MINUTE, lifetime=MINUTE)
    assert again.id == item.id
    claimed.progress = 5
    assert not await store.save_state(claimed)
    assert await store.save_state(again)


async def test_a_lost_lease_writes_nothing(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    assert claimed.lease is not None
    claimed.lease.lost = True
    claimed.progress = 3
    assert not await store.save_state(claimed)
    await store.release([claimed])
    back = await reread(store, item)
    assert back.progress is None and back.locked_at is not None


async def test_save_state_of_a_removed_job_is_false(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    await store.remove(JobCriteria(id=item.id))
    assert not await store.save_state(claimed)
    assert not await store.save_state_batched(claimed)
    assert await store.renew_locks([claimed], utcnow()) == [claimed]


async def test_save_state_without_a_lease_writes_by_id(store: JobStore) -> None:
    item = await saved(store)
    item.progress = 42
    item.last_run_at = utcnow()
    assert await store.save_state(item)
    assert (await reread(store, item)).progress == 42
    await store.remove(JobCriteria(id=item.id))
    assert not await store.save_state(item)


async def test_batched_saves_of_a_claimed_batch_with_one_stolen(store: JobStore) -> None:
    now = utcnow()
    for i in range(4):
        await saved(store, data=i, next_run_at=now - (40 - i) * MINUTE)
    batch = await claim(store, "work", limit=4, now=now - 20 * MINUTE, token="batch")
    assert len(batch) == 4
    # Another worker takes the first one over after its lock expired.
    [thief] = await claim(store, "work", now=now, lifetime=10 * MINUTE, token="thief")
    assert thief.id == batch[0].id
    ran = utcnow()
    for item in batch:
        item.last_run_at = ran
    results = await asyncio.gather(*(store.save_state_batched(item) for item in batch))
    assert results == [False, True, True, True]
    assert (await reread(store, batch[0])).last_run_at is None
    assert [(await reread(store, item)).last_run_at for item in batch[1:]] == [ran] * 3


async def test_renewal_moves_the_lock_and_keeps_the_fence(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    later = ms(utcnow() + MINUTE)
    assert await store.renew_locks([claimed], later) == []
    assert claimed.locked_at == later
    assert claimed.lease is not None and claimed.lease.locked_at == later
    assert (await reread(store, item)).locked_at == later
    claimed.progress = 7
    assert await store.save_state(claimed)
    # A renewal protects against expiry: a claim whose deadline is before the renewal finds nothing.
    assert await claim(store, "work", now=later + timedelta(seconds=30), lifetime=MINUTE) == []


async def test_touch_style_save_of_locked_at_moves_the_fence(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    claimed.locked_at = ms(utcnow() + timedelta(seconds=5))
    assert await store.save_state(claimed, fields=["locked_at", "progress"])
    claimed.progress = 8
    assert await store.save_state(claimed, fields=["progress"])
    assert (await reread(store, item)).progress == 8


async def test_release_unlocks_and_may_reschedule(store: JobStore) -> None:
    a = await saved(store, data="a")
    b = await saved(store, data="b")
    claimed = await claim(store, "work", limit=2)
    at = ms(utcnow() + timedelta(hours=1))
    await store.release([claimed[0]], reschedule_at=at)
    await store.release([claimed[1]])
    first, second = await reread(store, a), await reread(store, b)
    assert first.locked_at is None and first.next_run_at == at
    assert second.locked_at is None and second.next_run_at == b.next_run_at
    assert all(c.locked_at is None for c in claimed)
    [again] = await claim(store, "work")
    assert again.id == b.id


async def test_refresh_run_fields(store: JobStore) -> None:
    item = await saved(store)
    [claimed] = await claim(store, "work")
    claimed.last_run_at = utcnow()
    await store.save_state(claimed)
    await store.refresh_run_fields(item)
    assert item.last_run_at == claimed.last_run_at and item.locked_at == claimed.locked_at
    await store.remove(JobCriteria(id=item.id))
    with pytest.raises(JobNotFound):
        await store.refresh_run_fields(item)


async def test_claim_request_helper_is_consistent() -> None:
    request = claim_request(["a", "b"], lifetime=MINUTE)
    assert request.lock_deadlines["a"] == request.now - MINUTE


# -- each name's room in a batch ------------------------------------------------------------------


async def test_a_batch_takes_each_name_within_its_room_in_claim_order(store: JobStore) -> None:
    made = await names_in_order(store, [("a", 5), ("b", 5), ("c", 5)])
    claimed = await claim(store, ["a", "b", "c"], limit=10, per_name={"a": 2, "b": 3, "c": 1})
    expected = made["a"][:2] + made["b"][:3] + made["c"][:1]
    assert [j.id for j in claimed] == [j.id for j in expected]
    assert len({j.lease.token for j in claimed if j.lease}) == 1
    # What a full name left behind is still there for the next claim.
    again = await claim(store, ["a", "b", "c"], limit=10, per_name={"a": 1, "b": 1, "c": 1})
    assert [j.id for j in again] == [made["a"][2].id, made["b"][3].id, made["c"][1].id]


async def test_the_total_limit_goes_to_the_earliest_due_across_names(store: JobStore) -> None:
    made = await names_in_order(store, [("a", 3), ("b", 3)])
    claimed = await claim(store, ["a", "b"], limit=4, per_name={"a": 2, "b": 3})
    assert [j.id for j in claimed] == [j.id for j in made["a"][:2] + made["b"][:2]]


async def test_a_name_without_room_is_skipped_not_a_stop(store: JobStore) -> None:
    made = await names_in_order(store, [("busy", 3), ("free", 2)])
    batch = await claim(store, ["busy", "free"], limit=5, per_name={"busy": 0, "free": 5})
    assert [j.id for j in batch] == [j.id for j in made["free"]]
    made = await names_in_order(store, [("busy", 1), ("single", 1)])
    one = await claim(store, ["busy", "single"], limit=1, per_name={"busy": 0, "single": 1})
    assert [j.id for j in one] == [made["single"][0].id]
    assert await claim(store, ["busy"], limit=1, per_name={"busy": 0}) == []
    assert await claim(store, ["busy"], limit=3, per_name={"busy": 0}) == []


async def test_priority_decides_between_names_due_at_the_same_time(store: JobStore) -> None:
    now = utcnow() - MINUTE
    low = [await saved(store, "low", next_run_at=now, priority=-10) for _ in range(3)]
    high = [await saved(store, "high", next_run_at=now, priority=10) for _ in range(3)]
    claimed = await claim(store, ["low", "high"], limit=4, per_name={"low": 3, "high": 2})
    assert [j.id for j in claimed[:2]] == [j.id for j in high[:2]]
    assert {j.id for j in claimed[2:]} <= {j.id for j in low}


async def test_a_released_job_without_a_next_run_is_due_again(store: JobStore) -> None:
    """A run that cleared its next run (a one-off's start write) and then handed its job back (a
    stopping worker) leaves the job due now, so no release strands it."""
    await saved(store, next_run_at=utcnow() - MINUTE)
    [claimed] = await claim(store, "work")
    claimed.next_run_at = None
    assert await store.save_state(claimed, fields=["next_run_at"])
    await store.release([claimed])
    [again] = await claim(store, "work")
    assert again.id == claimed.id
    assert again.next_run_at is not None
