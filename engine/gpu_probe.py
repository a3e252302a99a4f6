"""What torch sees of the GPU, asked in a child process so that the caller never imports torch.

    probe = probe_gpu()        # runs `python -m engine.gpu_probe`, which prints one JSON object

The chat process (and `majicbot doctor`) must not import torch: importing it takes seconds and
initialises CUDA. The child reports torch's version and CUDA build, whether CUDA works (and the
driver's complaint when not), and each device's name and free memory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any

PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    name: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class GpuProbe:
    """What the child saw. `torch_version` None: torch is not installed (or failed to import)."""

    torch_version: str | None
    cuda_build: str | None  # torch.version.cuda: None for a CPU-only build
    cuda_available: bool
    devices: tuple[GpuDevice, ...]
    problem: str  # the driver's or torch's own words when something failed; "" otherwise
    driver_version: str | None = None  # from nvidia-smi; None when it is not installed
    driver_cuda: str | None = None  # the newest CUDA version the driver supports


def probe_gpu(python: str = sys.executable, timeout_s: float = PROBE_TIMEOUT_S) -> GpuProbe:
    """Run the probe in a child process; a child that fails or hangs is reported, never raised."""
    try:
        result = subprocess.run(
            [python, "-m", "engine.gpu_probe"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return GpuProbe(None, None, False, (), f"asking torch about the GPU took over {timeout_s:.0f} s")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return GpuProbe(None, None, False, (), f"the GPU probe failed: {last}")
    return parse_probe(json.loads(lines[-1]))


def parse_probe(data: dict[str, Any]) -> GpuProbe:
    return GpuProbe(
        torch_version=data.get("torch_version"),
        cuda_build=data.get("cuda_build"),
        cuda_available=bool(data.get("cuda_available")),
        devices=tuple(GpuDevice(**device) for device in data.get("devices", ())),
        problem=str(data.get("problem", "")),
        driver_version=data.get("driver_version"),
        driver_cuda=data.get("driver_cuda"),
    )


def _driver() -> dict[str, str]:
    """The driver's version and the CUDA version it supports, from nvidia-smi's header."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return {}
    try:
        output = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for key, pattern in (
        ("driver_version", r"Driver Version:\s*([0-9.]+)"),
        ("driver_cuda", r"CUDA Version:\s*([0-9.]+)"),
    ):
        match = re.search(pattern, output)
        if match:
            found[key] = match.group(1)
    return found


def _probe_here() -> dict[str, Any]:
    driver = _driver()
    try:
        import torch
    except Exception as error:
        return {"torch_version": None, "problem": f"{type(error).__name__}: {error}", **driver}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            available = bool(torch.cuda.is_available())
            problem = ""
        except Exception as error:
            available, problem = False, f"{type(error).__name__}: {error}"
    problem = problem or " ".join(str(w.message).splitlines()[0] for w in caught)
    devices = []
    if available:
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            name = str(torch.cuda.get_device_name(index))
            devices.append({"index": index, "name": name, "free_bytes": int(free), "total_bytes": int(total)})
    return {
        "torch_version": str(torch.__version__),
        "cuda_build": torch.version.cuda,
        "cuda_available": available,
        "devices": devices,
        "problem": problem,
        **driver,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_probe_here()) + "\n")
