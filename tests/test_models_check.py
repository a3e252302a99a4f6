"""models/: recognition by DiffSynth's name-and-shape hash over sparse header-only safetensors files."""

from __future__ import annotations

import gzip
import json
import math
import struct
import sys
from pathlib import Path

import pytest

from models import FIX_COMMAND, FileStatus, ModelFilesMissing, check_models, require_complete
from models.registry import MODEL_FILES, model_file, model_paths
from models.safetensors_header import read_header

SHAPES_FILE = Path(__file__).parent / "data" / "flux_model_shapes.json.gz"
_BYTES = {"F8_E4M3": 1, "BF16": 2}


def _shapes() -> dict[str, dict[str, list[int]]]:
    with gzip.open(SHAPES_FILE, "rt") as f:
        data: dict[str, dict[str, list[int]]] = json.load(f)
    return data


def _write_sparse(path: Path, shapes: dict[str, list[int]], dtype: str = "BF16", cut: int = 0) -> None:
    """A safetensors file with the real header whose data is a hole: no disk used."""
    header: dict[str, object] = {}
    offset = 0
    for name in sorted(shapes):
        n = math.prod(shapes[name]) * _BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shapes[name], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset - cut)


def _write_set(model_dir: Path, skip: frozenset[str] = frozenset()) -> None:
    shapes = _shapes()
    paths = model_paths(model_dir)
    if "dit" not in skip:
        _write_sparse(paths.dit, shapes["dit"], "F8_E4M3")
    if "text_encoder_clip" not in skip:
        _write_sparse(paths.text_encoder_clip, shapes["text_encoder_clip"])
    if "text_encoder_t5" not in skip:
        names = sorted(shapes["text_encoder_t5"])
        half = len(names) // 2
        for shard, part in zip(paths.text_encoder_t5, (names[:half], names[half:]), strict=True):
            _write_sparse(shard, {k: shapes["text_encoder_t5"][k] for k in part})
    if "vae" not in skip:
        _write_sparse(paths.vae, shapes["vae"])
    for folder in (paths.tokenizer_clip, paths.tokenizer_t5):
        if folder.name not in skip:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "tokenizer_config.json").write_text("{}")


def test_full_sparse_set_is_recognised(tmp_path: Path) -> None:
    _write_set(tmp_path)
    report = check_models(tmp_path)
    assert [f.status for f in report.files] == [FileStatus.OK] * len(MODEL_FILES), report.render()
    assert report.complete
    assert report.fix_message() == ""
    dit = next(f for f in report.files if f.entry.role == "dit")
    assert dit.size_bytes > 11 * 10**9  # the real size, though the file occupies no blocks
    assert "All model files are present" in report.render()
    require_complete(tmp_path)


def test_header_reports_expected_size(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    _write_sparse(path, {"a.weight": [4, 8], "b.bias": [8]})
    header = read_header(path)
    assert header.tensors["a.weight"].shape == (4, 8)
    assert header.expected_file_size == path.stat().st_size


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    _write_set(tmp_path, skip=frozenset({"dit", "tokenizer_2"}))
    report = check_models(tmp_path)
    bad = {f.entry.role: f.status for f in report.problems}
    assert bad == {"dit": FileStatus.MISSING, "tokenizer_t5": FileStatus.MISSING}
    with pytest.raises(ModelFilesMissing) as info:
        require_complete(tmp_path)
    message = str(info.value)
    assert FIX_COMMAND in message
    assert "MAILAND/majicflus_v1/majicflus_v134.safetensors" in message
    assert str(tmp_path) in message
    assert info.value.report.problems == report.problems


def test_empty_dir_lists_everything(tmp_path: Path) -> None:
    report = check_models(tmp_path / "nothing-here")
    assert {f.status for f in report.files} == {FileStatus.MISSING}
    assert FIX_COMMAND in report.render()


def test_truncated_download_is_incomplete(tmp_path: Path) -> None:
    _write_set(tmp_path)
    vae = model_paths(tmp_path).vae
    _write_sparse(vae, _shapes()["vae"], cut=1000)
    report = check_models(tmp_path)
    assert [f.entry.role for f in report.problems] == ["vae"]
    assert report.problems[0].status is FileStatus.INCOMPLETE
    assert "interrupted" in report.problems[0].detail


def test_wrong_model_is_unrecognised(tmp_path: Path) -> None:
    _write_set(tmp_path)
    shapes = dict(_shapes()["text_encoder_clip"])
    shapes.pop(sorted(shapes)[0])
    _write_sparse(model_paths(tmp_path).text_encoder_clip, shapes)
    report = check_models(tmp_path)
    assert [(f.entry.role, f.status) for f in report.problems] == [
        ("text_encoder_clip", FileStatus.UNRECOGNISED)
    ]


def test_one_missing_t5_shard(tmp_path: Path) -> None:
    _write_set(tmp_path)
    model_paths(tmp_path).text_encoder_t5[1].unlink()
    report = check_models(tmp_path)
    assert [(f.entry.role, f.status) for f in report.problems] == [("text_encoder_t5", FileStatus.MISSING)]


def test_garbage_file_is_unreadable(tmp_path: Path) -> None:
    _write_set(tmp_path)
    model_paths(tmp_path).vae.write_bytes(b"<html>not a model</html>")
    report = check_models(tmp_path)
    assert report.problems[0].status is FileStatus.UNREADABLE


def test_models_package_never_imports_torch() -> None:
    assert model_file("dit").diffsynth_hash == "3394f306c4cbf04334b712bf5aaed95f"
    import subprocess

    code = "import models, sys; assert 'torch' not in sys.modules and 'modelscope' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
