"""`majicbot download`: fetch exactly the missing files of the model set through ModelScope (resumable).

Entries that `check_models` already finds complete and recognised are not fetched again, so a second
run does not touch the network. ModelScope resumes a partial file (it keeps `*.incomplete` parts) and
reports bytes per file through progress callbacks, which go to the caller's `TransferFactory`: the CLI
draws a bar per file on a terminal and writes periodic log lines otherwise.

Failures become `DownloadUnavailable` (modelscope not installed) or `DownloadFailed` (network,
401/403, disk), each with what to do.
"""

from __future__ import annotations

import errno
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from models.check import check_models
from models.registry import FLUX_REPO, MODEL_FILES, ModelFile

log = logging.getLogger(__name__)

GPU_EXTRA_INSTALL = "pip install 'majicbot[gpu]'"
_STATUS_IN_TEXT = re.compile(
    r"\b(401|403|404|5\d\d)\b.{0,20}(?:Unauthorized|Forbidden|Not Found|Error)", re.IGNORECASE
)


class DownloadUnavailable(RuntimeError):
    """modelscope is not installed (it comes with the `gpu` extra)."""


class DownloadFailed(RuntimeError):
    """A download failed; the text says why and what to do (files already fetched are kept)."""


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """One repository about to be fetched."""

    repo_id: str
    patterns: tuple[str, ...]
    index: int  # 1-based
    total: int
    local_dir: Path


class FileTransfer(Protocol):
    """Progress of one file; called from ModelScope's download threads."""

    def advance(self, n_bytes: int) -> None: ...

    def finish(self) -> None: ...


TransferFactory = Callable[[str, int], FileTransfer]
"""Called once per file with (file name, size in bytes; 0 when unknown)."""

ProgressCallback = Callable[[DownloadProgress], None]


def _modelscope() -> ModuleType:
    try:
        return importlib.import_module("modelscope")
    except ImportError:
        raise DownloadUnavailable(
            "downloading the models needs modelscope, which comes with the GPU extra: "
            f"run `{GPU_EXTRA_INSTALL}` and try again."
        ) from None


def _missing_by_repo(model_dir: Path) -> dict[str, list[ModelFile]]:
    missing = {f.entry.role for f in check_models(model_dir).problems}
    by_repo: dict[str, list[ModelFile]] = {}
    for entry in MODEL_FILES:
        if entry.role in missing:
            by_repo.setdefault(entry.repo_id, []).append(entry)
    return by_repo


def download_models(
    model_dir: Path,
    on_progress: ProgressCallback | None = None,
    *,
    on_file: TransferFactory | None = None,
) -> int:
    """Fetch what is missing or damaged under ``<model_dir>/<repo id>/``; return how many repositories
    were contacted (0 when everything was already present)."""
    repos = _missing_by_repo(model_dir)
    if not repos:
        log.info("every model file is already present in %s", model_dir)
        return 0
    modelscope = _modelscope()
    extra: dict[str, Any] = {}
    if on_file is not None:
        callback_class = _callback_class(modelscope, on_file)
        if callback_class is not None:
            extra["progress_callbacks"] = [callback_class]
    for index, (repo_id, entries) in enumerate(repos.items(), start=1):
        patterns = [entry.allow_pattern for entry in entries]
        local_dir = model_dir / repo_id
        try:
            local_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DownloadFailed(
                f"cannot create {local_dir} ({error.strerror}); set engine.model_dir to a writable place."
            ) from None
        if on_progress is not None:
            on_progress(DownloadProgress(repo_id, tuple(patterns), index, len(repos), local_dir))
        log.debug("downloading %s (%s) into %s", repo_id, ", ".join(patterns), local_dir)
        try:
            modelscope.snapshot_download(repo_id, allow_patterns=patterns, local_dir=str(local_dir), **extra)
        except Exception as error:
            raise DownloadFailed(describe_download_error(error, repo_id)) from error
    return len(repos)


def describe_download_error(error: BaseException, repo_id: str) -> str:
    """What went wrong fetching ``repo_id`` and what to do, in one or two sentences."""
    status = _http_status(error)
    rerun = "Files already fetched are kept: run `majicbot download` again to resume."
    if status == 401:
        return (
            f"ModelScope refused to send {repo_id} (401 Unauthorized). Log in with "
            "`modelscope login --token YOUR_TOKEN` (or set MODELSCOPE_API_TOKEN), then run it again."
        )
    if status == 403:
        gated = (
            f" Accept FLUX.1-dev's licence on its ModelScope page ({FLUX_REPO}) with the same account."
            if repo_id == FLUX_REPO
            else ""
        )
        return (
            f"ModelScope refused access to {repo_id} (403 Forbidden).{gated} Log in with "
            "`modelscope login --token YOUR_TOKEN`, then run `majicbot download` again."
        )
    if status == 404:
        return f"ModelScope has no {repo_id} or one of its files (404). {rerun}"
    if status is not None and status >= 500:
        return f"ModelScope answered {status} for {repo_id}: a problem on its side; try again later. {rerun}"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"the disk is full while fetching {repo_id}; free space (about 33 GB in all). {rerun}"
    if isinstance(error, ConnectionError | TimeoutError | OSError) or _looks_like_network(error):
        return (
            f"cannot reach ModelScope while fetching {repo_id} ({_short(error)}); check the network. {rerun}"
        )
    return f"fetching {repo_id} failed ({_short(error)}). {rerun}"


def _http_status(error: BaseException) -> int | None:
    for candidate in (error, error.__cause__, error.__context__):
        if candidate is None:
            continue
        status = getattr(candidate, "status_code", None)
        if status is None:
            response = getattr(candidate, "response", None)
            status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    # Some clients only say it in words: "401 Client Error: Unauthorized for url: ...".
    match = _STATUS_IN_TEXT.search(str(error))
    return int(match.group(1)) if match else None


def _looks_like_network(error: BaseException) -> bool:
    name = type(error).__name__
    return any(word in name for word in ("Connection", "Timeout", "Network", "SSL"))


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _callback_class(modelscope: ModuleType, on_file: TransferFactory) -> type | None:
    """A ModelScope `ProgressCallback` subclass forwarding to ``on_file`` (None if this modelscope has
    no progress callbacks; it then draws its own bars)."""
    base = getattr(modelscope, "ProgressCallback", None)
    if base is None:
        try:
            base = importlib.import_module("modelscope.hub").ProgressCallback
        except (ImportError, AttributeError):
            return None

    def __init__(self: Any, filename: str, file_size: int) -> None:
        base.__init__(self, filename, file_size)
        self.transfer = on_file(filename, int(file_size or 0))

    def update(self: Any, size: int) -> None:
        self.transfer.advance(int(size))

    def end(self: Any) -> None:
        self.transfer.finish()

    return type("MajicbotProgress", (base,), {"__init__": __init__, "update": update, "end": end})
