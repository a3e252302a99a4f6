"""A stand-in for modelscope (its servers cannot be reached from tests), put first on PYTHONPATH.

`snapshot_download` behaves as FAKE_MODELSCOPE says:
  ok (default)  writes the requested entries of a recognised sparse model set, reporting bytes to the
                progress callbacks in a few chunks per file
  401 / 403     raises an error carrying that HTTP status, as modelscope_hub's API errors do
  offline       raises ConnectionError as requests does when nothing answers
Each call is appended as a JSON line to the file FAKE_MODELSCOPE_LOG names (if set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from models.registry import MODEL_FILES
from modelscope.hub import ProgressCallback
from tests.support.model_files import write_set

__all__ = ["ProgressCallback", "snapshot_download"]


class HubHTTPError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def snapshot_download(
    repo_id: str,
    *,
    allow_patterns: list[str],
    local_dir: str,
    progress_callbacks: list[type[ProgressCallback]] | None = None,
    **_: Any,
) -> str:
    log = os.environ.get("FAKE_MODELSCOPE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"repo_id": repo_id, "allow_patterns": allow_patterns}) + "\n")
    mode = os.environ.get("FAKE_MODELSCOPE", "ok")
    if mode in ("401", "403"):
        reason = "Unauthorized" if mode == "401" else "Forbidden"
        raise HubHTTPError(int(mode), f"HTTP {mode} {reason} on GET /api/v1/models/{repo_id}")
    if mode == "offline":
        raise ConnectionError(
            "HTTPSConnectionPool: Max retries exceeded (Failed to establish a new connection: "
            "[Errno 111] Connection refused)"
        )
    wanted = [
        entry for entry in MODEL_FILES if entry.repo_id == repo_id and entry.allow_pattern in allow_patterns
    ]
    roles = {entry.role for entry in wanted} | {entry.paths[0] for entry in wanted}
    every = {entry.role for entry in MODEL_FILES} | {entry.paths[0] for entry in MODEL_FILES}
    model_dir = Path(local_dir).parent.parent
    write_set(model_dir, skip=frozenset(every - roles))
    for entry in wanted:
        for path in entry.local_paths(model_dir):
            if not path.is_file():
                continue  # a tokenizer folder
            size = path.stat().st_size
            for callback_class in progress_callbacks or ():
                callback = callback_class(str(path.relative_to(local_dir)), size)
                for _ in range(4):
                    callback.update(size // 4)
                callback.update(size - 4 * (size // 4))
                callback.end()
    return local_dir
