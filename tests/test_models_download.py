"""models.download: which patterns go to which repository, and the message without modelscope."""

from __future__ import annotations

import errno
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from models import DownloadFailed, DownloadProgress, DownloadUnavailable, check_models, download_models
from models.download import describe_download_error
from tests.support.model_files import write_set


def test_download_fetches_only_the_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], str]] = []

    def snapshot_download(repo_id: str, *, allow_patterns: list[str], local_dir: str, **_: Any) -> str:
        calls.append((repo_id, allow_patterns, local_dir))
        return local_dir

    # modelscope's servers cannot exist here: a stand-in module records the calls.
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    seen: list[DownloadProgress] = []
    download_models(tmp_path, seen.append)
    assert calls == [
        ("MAILAND/majicflus_v1", ["majicflus_v134.safetensors"], str(tmp_path / "MAILAND/majicflus_v1")),
        (
            "black-forest-labs/FLUX.1-dev",
            [
                "text_encoder/model.safetensors",
                "text_encoder_2/*",
                "ae.safetensors",
                "tokenizer/*",
                "tokenizer_2/*",
            ],
            str(tmp_path / "black-forest-labs/FLUX.1-dev"),
        ),
    ]
    assert [(p.index, p.total) for p in seen] == [(1, 2), (2, 2)]


def test_without_modelscope_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelscope", None)
    with pytest.raises(DownloadUnavailable, match=r"majicbot\[gpu\]"):
        download_models(tmp_path)


FAKE_MODELSCOPE = Path(__file__).parent / "support" / "fake_modelscope"


@pytest.fixture
def fake_modelscope(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in package of tests/support/fake_modelscope, importable as `modelscope`."""
    for name in [n for n in sys.modules if n == "modelscope" or n.startswith("modelscope.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKE_MODELSCOPE))


class _Recorder:
    def __init__(self) -> None:
        self.files: dict[str, list[int]] = {}
        self.finished: list[str] = []

    def __call__(self, name: str, size: int) -> _Recorder.Transfer:
        self.files[name] = [size, 0]
        return _Recorder.Transfer(self, name)

    class Transfer:
        def __init__(self, recorder: _Recorder, name: str) -> None:
            self._recorder = recorder
            self._name = name

        def advance(self, n_bytes: int) -> None:
            self._recorder.files[self._name][1] += n_bytes

        def finish(self) -> None:
            self._recorder.finished.append(self._name)


@pytest.mark.usefixtures("fake_modelscope")
def test_bytes_of_each_file_reach_the_display(tmp_path: Path) -> None:
    recorder = _Recorder()
    assert download_models(tmp_path, on_file=recorder) == 2
    assert check_models(tmp_path).complete
    dit = recorder.files["majicflus_v134.safetensors"]
    assert dit[0] > 11 * 10**9 and dit[1] == dit[0]  # every byte of the size was reported
    assert "text_encoder_2/model-00002-of-00002.safetensors" in recorder.finished
    assert len(recorder.finished) == 5  # DiT, CLIP, two T5 shards, VAE


@pytest.mark.usefixtures("fake_modelscope")
def test_only_missing_entries_are_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_MODELSCOPE_LOG", str(log))
    write_set(tmp_path, skip=frozenset({"vae"}))
    assert download_models(tmp_path) == 1
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"repo_id": "black-forest-labs/FLUX.1-dev", "allow_patterns": ["ae.safetensors"]}
    ]
    assert download_models(tmp_path) == 0  # complete: nothing is contacted
    assert len(log.read_text().splitlines()) == 1


def test_complete_set_needs_no_modelscope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelscope", None)
    write_set(tmp_path)
    assert download_models(tmp_path) == 0


class _HttpError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_HttpError(401), "modelscope login"),
        (_HttpError(403), "Accept FLUX.1-dev's licence"),
        (_HttpError(503), "try again later"),
        (ConnectionError("Connection refused"), "check the network"),
        (TimeoutError("read timed out"), "check the network"),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    ],
)
def test_failures_say_what_to_do(error: Exception, expected: str) -> None:
    message = describe_download_error(error, "black-forest-labs/FLUX.1-dev")
    assert expected in message
    assert "\n" not in message


def test_a_failed_repository_raises_download_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def snapshot_download(repo_id: str, **_: Any) -> str:
        raise _HttpError(401)

    fake = types.ModuleType("modelscope")
    fake.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    with pytest.raises(DownloadFailed, match="401"):
        download_models(tmp_path)


def test_a_status_said_only_in_words_is_understood() -> None:
    error = RuntimeError("403 Client Error: Forbidden for url: https://example/api/v1/models/x")
    assert "403 Forbidden" in describe_download_error(error, "black-forest-labs/FLUX.1-dev")
