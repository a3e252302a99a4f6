"""models/: recognition by DiffSynth's name-and-shape hash over sparse header-only safetensors files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from models import FIX_COMMAND, FileStatus, ModelFilesMissing, check_models, require_complete
from models.registry import MODEL_FILES, model_file, model_paths
from models.safetensors_header import read_header
from tests.support.model_files import model_shapes, write_set, write_sparse


def test_full_sparse_set_is_recognised(tmp_path: Path) -> None:
    write_set(tmp_path)
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
    write_sparse(path, {"a.weight": [4, 8], "b.bias": [8]})
    header = read_header(path)
    assert header.tensors["a.weight"].shape == (4, 8)
    assert header.expected_file_size == path.stat().st_size


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    write_set(tmp_path, skip=frozenset({"dit", "tokenizer_2"}))
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
    write_set(tmp_path)
    vae = model_paths(tmp_path).vae
    write_sparse(vae, model_shapes()["vae"], cut=1000)
    report = check_models(tmp_path)
    assert [f.entry.role for f in report.problems] == ["vae"]
    assert report.problems[0].status is FileStatus.INCOMPLETE
    assert "interrupted" in report.problems[0].detail


def test_wrong_model_is_unrecognised(tmp_path: Path) -> None:
    write_set(tmp_path)
    shapes = dict(model_shapes()["text_encoder_clip"])
    shapes.pop(sorted(shapes)[0])
    write_sparse(model_paths(tmp_path).text_encoder_clip, shapes)
    report = check_models(tmp_path)
    assert [(f.entry.role, f.status) for f in report.problems] == [
        ("text_encoder_clip", FileStatus.UNRECOGNISED)
    ]


def test_one_missing_t5_shard(tmp_path: Path) -> None:
    write_set(tmp_path)
    model_paths(tmp_path).text_encoder_t5[1].unlink()
    report = check_models(tmp_path)
    assert [(f.entry.role, f.status) for f in report.problems] == [("text_encoder_t5", FileStatus.MISSING)]


def test_garbage_file_is_unreadable(tmp_path: Path) -> None:
    write_set(tmp_path)
    model_paths(tmp_path).vae.write_bytes(b"<html>not a model</html>")
    report = check_models(tmp_path)
    assert report.problems[0].status is FileStatus.UNREADABLE


def test_models_package_never_imports_torch() -> None:
    assert model_file("dit").diffsynth_hash == "3394f306c4cbf04334b712bf5aaed95f"
    import subprocess

    code = "import models, sys; assert 'torch' not in sys.modules and 'modelscope' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
