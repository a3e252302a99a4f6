"""The order in which queued jobs run: round-robin between users, first in first out within a user.

Among users with queued jobs, the one whose last job *started* longest ago goes next; users who never
started a job go before everyone else, ordered by their oldest queued job. Because the user served
then becomes the one who started most recently, a sequence of claims visits users in rounds, so the
whole queue's order is: sort users by that key, then take every user's first job, then every user's
second job, and so on. `JobQueue.claim_next` takes the head of this order, and positions shown to
users are indexes into it, so the two always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

UserKey = tuple[str, str]
"""(platform, user_id): the same person on two platforms counts as two users."""

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued job as far as ordering is concerned. Lower ids were queued earlier."""

    job_id: int
    user: UserKey


def fair_order(waiting: Iterable[Waiting], last_started: Mapping[UserKey, datetime]) -> list[int]:
    """Job ids in the order they will be claimed.

    `last_started` holds, for users who have started a job before, when their latest one started.
    """
    per_user: dict[UserKey, list[int]] = {}
    for item in sorted(waiting, key=lambda w: w.job_id):
        per_user.setdefault(item.user, []).append(item.job_id)

    def turn(user: UserKey) -> tuple[bool, datetime, int]:
        started = last_started.get(user)
        # False sorts first: users who never started a job, among themselves by their oldest job.
        return (started is not None, started or _NEVER, per_user[user][0])

    users = sorted(per_user, key=turn)
    order: list[int] = []
    depth = max((len(jobs) for jobs in per_user.values()), default=0)
    for round_index in range(depth):
        order.extend(per_user[user][round_index] for user in users if round_index < len(per_user[user]))
    return order
