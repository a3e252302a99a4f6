"""A stand-in for torch on a machine with a GPU (none exists here), put first on PYTHONPATH.

FAKE_TORCH says what it pretends:
  gpu (default)  torch 2.11.0+cu130 and one "NVIDIA GeForce RTX 4070" with FAKE_TORCH_FREE_GIB (11.5) of
                 FAKE_TORCH_TOTAL_GIB (12) free
  cpu            torch 2.11.0+cpu: no CUDA build
  old-driver     a CUDA 13.0 build whose driver is too old: is_available() warns and says False
"""

from __future__ import annotations

import os
import warnings

_MODE = os.environ.get("FAKE_TORCH", "gpu")
_GIB = 2**30

__version__ = "2.11.0+cpu" if _MODE == "cpu" else "2.11.0+cu130"


class version:
    cuda = None if _MODE == "cpu" else "13.0"


class cuda:
    @staticmethod
    def is_available() -> bool:
        if _MODE == "old-driver":
            warnings.warn(
                "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020). "
                "Please update your GPU driver.",
                UserWarning,
                stacklevel=2,
            )
            return False
        return _MODE == "gpu"

    @staticmethod
    def device_count() -> int:
        return 1 if _MODE == "gpu" else 0

    @staticmethod
    def mem_get_info(index: int = 0) -> tuple[int, int]:
        free = float(os.environ.get("FAKE_TORCH_FREE_GIB", "11.5"))
        total = float(os.environ.get("FAKE_TORCH_TOTAL_GIB", "12"))
        return int(free * _GIB), int(total * _GIB)

    @staticmethod
    def get_device_name(index: int = 0) -> str:
        return "NVIDIA GeForce RTX 4070"
