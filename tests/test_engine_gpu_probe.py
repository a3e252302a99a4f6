"""engine.gpu_probe: torch is asked in a child process; a fake torch stands in for each GPU situation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.gpu_probe import GpuDevice, GpuProbe, probe_gpu

ROOT = Path(__file__).resolve().parent.parent
FAKE_TORCH = ROOT / "tests" / "support" / "fake_torch"
FAKE_NVIDIA_SMI = ROOT / "tests" / "support" / "fake_nvidia_smi"


def _with_fake_torch(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_TORCH), str(ROOT)]))
    monkeypatch.setenv("FAKE_TORCH", mode)


def test_a_gpu_with_its_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, "gpu")
    monkeypatch.setenv("FAKE_TORCH_FREE_GIB", "10")
    probe = probe_gpu()
    assert probe.torch_version == "2.11.0+cu130"
    assert probe.cuda_build == "13.0"
    assert probe.cuda_available
    assert probe.devices == (GpuDevice(0, "NVIDIA GeForce RTX 4070", 10 * 2**30, 12 * 2**30),)


def test_a_driver_too_old_is_reported_in_its_own_words(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, "old-driver")
    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKE_NVIDIA_SMI), os.environ["PATH"]]))
    probe = probe_gpu()
    assert not probe.cuda_available
    assert "driver on your system is too old" in probe.problem
    assert probe.devices == ()
    assert (probe.driver_version, probe.driver_cuda) == ("550.54.14", "12.4")


def test_without_nvidia_smi_the_driver_is_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _with_fake_torch(monkeypatch, "old-driver")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    probe = subprocess_free_probe()
    assert probe.driver_version is None and probe.driver_cuda is None


def subprocess_free_probe() -> GpuProbe:
    """probe_gpu with the interpreter named by its full path (PATH has nothing on it)."""
    return probe_gpu(sys.executable)


def test_a_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, "cpu")
    probe = probe_gpu()
    assert probe.torch_version == "2.11.0+cpu"
    assert probe.cuda_build is None


def test_a_broken_child_is_reported_not_raised(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'ImportError: libcudart.so.13: cannot open' >&2\nexit 1\n")
    python.chmod(0o755)
    probe = probe_gpu(str(python))
    assert probe.torch_version is None
    assert "libcudart" in probe.problem


def test_the_calling_process_does_not_import_torch() -> None:
    code = "import sys, bot.cli, bot.doctor, engine.gpu_probe; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
