"""`majicbot download`: fetch exactly the files of the model set through ModelScope (resumable)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import MODEL_FILES

log = logging.getLogger(__name__)


class DownloadUnavailable(RuntimeError):
    """modelscope is not installed (it comes with the `gpu` extra)."""


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """One repository about to be fetched (modelscope draws its own per-file progress bars)."""

    repo_id: str
    patterns: tuple[str, ...]
    index: int  # 1-based
    total: int
    local_dir: Path


ProgressCallback = Callable[[DownloadProgress], None]


def _patterns_by_repo() -> dict[str, list[str]]:
    by_repo: dict[str, list[str]] = {}
    for entry in MODEL_FILES:
        by_repo.setdefault(entry.repo_id, []).append(entry.allow_pattern)
    return by_repo


def _snapshot_download() -> Callable[..., Any]:
    try:
        module = importlib.import_module("modelscope")
    except ImportError as exc:
        raise DownloadUnavailable(
            "Downloading models needs modelscope, which comes with the GPU extra: "
            "run `pip install 'majicbot[gpu]'` and try again."
        ) from exc
    fn: Callable[..., Any] = module.snapshot_download
    return fn


def download_models(model_dir: Path, on_progress: ProgressCallback | None = None) -> None:
    """Fetch the missing parts of the model set into ``<model_dir>/<repo id>/``.

    Already complete files are skipped and partial ones resumed by modelscope itself.
    """
    snapshot_download = _snapshot_download()
    repos = _patterns_by_repo()
    for index, (repo_id, patterns) in enumerate(repos.items(), start=1):
        local_dir = model_dir / repo_id
        local_dir.mkdir(parents=True, exist_ok=True)
        if on_progress is not None:
            on_progress(DownloadProgress(repo_id, tuple(patterns), index, len(repos), local_dir))
        log.info("downloading %s (%s) into %s", repo_id, ", ".join(patterns), local_dir)
        snapshot_download(repo_id, allow_patterns=patterns, local_dir=str(local_dir))
