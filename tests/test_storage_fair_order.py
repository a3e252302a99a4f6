"""The pure round-robin ordering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.fair_order import Waiting, fair_order

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def waiting(*pairs: tuple[int, str]) -> list[Waiting]:
    return [Waiting(job_id=job_id, user=("telegram", user)) for job_id, user in pairs]


def test_empty_queue_has_no_order() -> None:
    assert fair_order([], {}) == []


def test_one_user_is_first_in_first_out() -> None:
    assert fair_order(waiting((3, "a"), (1, "a"), (2, "a")), {}) == [1, 2, 3]


def test_users_who_never_started_take_turns_by_their_oldest_job() -> None:
    jobs = waiting((1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "c"), (6, "b"))
    assert fair_order(jobs, {}) == [1, 4, 5, 2, 6, 3]


def test_the_user_who_started_longest_ago_goes_first() -> None:
    jobs = waiting((1, "a"), (2, "b"), (3, "c"))
    last_started = {("telegram", "a"): T0 + timedelta(seconds=2), ("telegram", "b"): T0}
    # c never started a job: first; then b (started at T0), then a.
    assert fair_order(jobs, last_started) == [3, 2, 1]


def test_one_user_with_many_jobs_cannot_starve_a_newcomer() -> None:
    jobs = waiting(*((i, "heavy") for i in range(1, 6)), (6, "newcomer"))
    assert fair_order(jobs, {("telegram", "heavy"): T0})[:2] == [6, 1]


def test_the_same_id_on_two_platforms_is_two_users() -> None:
    jobs = [
        Waiting(job_id=1, user=("telegram", "7")),
        Waiting(job_id=2, user=("telegram", "7")),
        Waiting(job_id=3, user=("discord", "7")),
    ]
    assert fair_order(jobs, {}) == [1, 3, 2]


def test_the_order_equals_claiming_the_head_again_and_again() -> None:
    """Rounds are a shortcut for: take the head, mark its user as started now, repeat."""
    jobs = waiting((1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c"), (6, "c"), (7, "d"), (8, "b"), (9, "a"))
    last_started = {("telegram", "b"): T0, ("telegram", "d"): T0 + timedelta(seconds=1)}
    predicted = fair_order(jobs, last_started)

    remaining, started, now, claimed = list(jobs), dict(last_started), T0, []
    while remaining:
        now += timedelta(seconds=10)
        head = fair_order(remaining, started)[0]
        job = next(w for w in remaining if w.job_id == head)
        remaining.remove(job)
        started[job.user] = now
        claimed.append(head)
    assert claimed == predicted
