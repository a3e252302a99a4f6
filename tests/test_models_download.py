"""models.download: which patterns go to which repository, and the message without modelscope."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from models import DownloadProgress, DownloadUnavailable, download_models


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
