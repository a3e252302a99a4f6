"""Peak temporary bytes of one FLUX DiT block per image size, whole-token and lean (chunked), on no GPU.

    python bench/block_memory.py        # needs diffsynth (the gpu extra); runs on the CPU in seconds

The blocks run on the meta device (shapes only, no arithmetic) under a dispatch mode that adds up the
bytes of every tensor while it is alive, so the peak is what the block's own code allocates (its inputs
excluded). Attention is replaced by an output-sized stand-in, as the GPU's memory-efficient kernels
allocate no more. These figures set the DiT constants of engine/memory_model.py.
"""

from __future__ import annotations

import sys
import weakref
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensors created inside it that are still alive, and the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))

        def note(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and not t._is_view():
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
            return t

        tree_map(note, out)
        return out

    def _free(self, n: int) -> None:
        self.live -= n


def _peaks(dit: Any, width: int, height: int) -> list[int]:
    from engine.lean_blocks import double_block_forward, single_block_forward

    image, text = (width // 16) * (height // 16), 512
    with torch.device("meta"):
        img = torch.empty(1, image, 3072, dtype=torch.bfloat16)
        txt = torch.empty(1, text, 3072, dtype=torch.bfloat16)
        temb = torch.empty(1, 3072, dtype=torch.bfloat16)
        rope = torch.empty(1, 1, image + text, 64, 2, 2, dtype=torch.float32)
        both = torch.empty(1, image + text, 3072, dtype=torch.bfloat16)
    runs: list[Any] = [
        lambda: dit.blocks[0](img, txt, temb, rope),
        lambda: dit.single_blocks[0](both, txt, temb, rope),
    ]
    for c in (1024, 2048, 4096):
        runs.append(lambda c=c: double_block_forward(dit.blocks[0], img, txt, temb, rope, c))
        runs.append(lambda c=c: single_block_forward(dit.single_blocks[0], both, temb, rope, c))
    peaks = []
    with torch.no_grad():
        for run in runs:
            tracker = LiveBytes()
            with tracker:
                run()
            peaks.append(tracker.peak // 2**20)
    return peaks


def main() -> int:
    from diffsynth.models.flux_dit import FluxDiT

    from engine.fp8_linear import MatmulMode, convert_linears

    with torch.device("meta"):
        dit = FluxDiT()
    convert_linears(dit, torch.bfloat16, MatmulMode.BF16)
    F.scaled_dot_product_attention = lambda q, k, v, attn_mask=None, **kw: torch.empty_like(q)  # type: ignore[assignment]
    print(
        "peak MiB per block: whole double, single; lean double, single at chunks of 1024, 2048, 4096 tokens"
    )
    for w, h in [(512, 512), (1024, 1024), (1536, 640), (2048, 2048)]:
        tokens = (w // 16) * (h // 16) + 512
        print(f"{w:>5}x{h:<4}{tokens:>8}  " + " ".join(str(p) for p in _peaks(dit, w, h)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
