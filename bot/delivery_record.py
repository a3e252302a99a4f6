"""What a job row records of a delivered result (`result_message_id`), so Delete finds every message.

A platform that posts a set of images as an album with the buttons on a message of their own (Telegram:
an album cannot carry buttons) records the buttons' message and the album's ("17 album 13,14,15,16");
one message is recorded as its id alone.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_RECORDED = 64  # the job row's result_message_id column


def result_message_id(buttons: int, album: Sequence[int] = ()) -> str:
    """The record of a delivery: the message with the buttons and, for several images, the album's
    messages before it (just the buttons' id if the ids would not fit the column)."""
    recorded = f"{buttons} album {','.join(map(str, album))}" if album else str(buttons)
    return recorded if len(recorded) <= MAX_RECORDED else str(buttons)


def album_of(recorded: str | None, buttons: int) -> tuple[int, ...]:
    """The album message ids posted with the buttons message `buttons` (none if none was)."""
    head, _, album = (recorded or "").partition(" album ")
    ids = album.split(",") if album else []
    if head != str(buttons) or not all(part.isascii() and part.isdigit() for part in ids):
        return ()
    return tuple(int(part) for part in ids)
