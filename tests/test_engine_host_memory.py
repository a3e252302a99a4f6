"""engine.host_memory: the host RAM model against the peaks measured in docs/performance.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.host_memory import GIB, HostMemory, read_host_memory, required_host_ram_bytes


@pytest.mark.parametrize(
    ("vram_gib", "measured_gib"),
    [(80.0, 22.9), (12.0, 24.3), (8.0, 28.7)],  # run A/B: no cap, 12 GiB and 8 GiB caps
)
def test_the_model_is_near_the_measured_peaks(vram_gib: float, measured_gib: float) -> None:
    needed = required_host_ram_bytes(int(vram_gib * GIB)) / GIB
    assert measured_gib - 0.5 <= needed <= measured_gib + 1.0


def test_less_vram_never_needs_less_host_ram() -> None:
    needs = [required_host_ram_bytes(gib * GIB) for gib in range(0, 40)]
    assert needs == sorted(needs, reverse=True)


def test_reads_proc_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32768000 kB\nMemFree:  1000 kB\nMemAvailable:   16384000 kB\n")
    assert read_host_memory(meminfo) == HostMemory(32768000 * 1024, 16384000 * 1024)
    assert read_host_memory(tmp_path / "absent") is None
