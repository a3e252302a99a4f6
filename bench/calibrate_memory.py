"""Measure what the memory planner needs to know, on a real GPU (run once per torch/diffsynth version).

    python bench/calibrate_memory.py --model-dir /tmp/models --out calib.json

With DiffSynth's own pipeline, everything resident in bf16 (so weights never move during a measurement):
- the CUDA context and lazily loaded kernels: free memory lost outside torch's allocator, after each phase;
- peak activation bytes of the DiT (one step) and of the VAE decoder, per image size, above the weights;
- peak bytes of the VAE decoder per latent tile size, and of T5 and CLIP on one prompt;
- host RSS after imports and after CUDA initialisation (what the process costs before any weight).
The figures feed the constants of engine/memory_model.py; docs/performance.md says which run set them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[1]


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GIB
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
    sys.path.insert(0, str(ROOT))
    out: dict[str, Any] = {"rss_start_gib": _rss_gib()}
    import torch

    out["rss_after_torch_gib"] = _rss_gib()
    torch.empty(1, device="cuda")
    free0, total = torch.cuda.mem_get_info()
    out["context_free_gib"] = free0 / GIB
    out["total_gib"] = total / GIB
    out["rss_after_cuda_init_gib"] = _rss_gib()

    def outside(tag: str) -> None:
        torch.cuda.synchronize()
        free, _ = torch.cuda.mem_get_info()
        out.setdefault("outside_allocator_gib", {})[tag] = (free0 - free - torch.cuda.memory_reserved()) / GIB

    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    out["rss_after_diffsynth_import_gib"] = _rss_gib()
    from models.registry import model_paths

    p = model_paths(args.model_dir)
    t0 = time.perf_counter()
    pipe = FluxImagePipeline.from_pretrained(
        torch_dtype=torch.bfloat16,
        device="cuda",
        model_configs=[
            ModelConfig(path=str(p.dit)),
            ModelConfig(path=str(p.text_encoder_clip)),
            ModelConfig(path=[str(x) for x in p.text_encoder_t5]),
            ModelConfig(path=str(p.vae)),
        ],
        tokenizer_1_config=ModelConfig(path=str(p.tokenizer_clip)),
        tokenizer_2_config=ModelConfig(path=str(p.tokenizer_t5)),
    )
    out["ref_load_s"] = time.perf_counter() - t0
    out["rss_after_ref_load_gib"] = _rss_gib()
    outside("after load")
    weights = torch.cuda.memory_allocated()
    out["weights_gib"] = weights / GIB

    phases: dict[str, float] = {}

    def peak_hook(name: str, module: torch.nn.Module) -> None:
        def pre(*_: Any, **__: Any) -> None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            phases[name + ":base"] = torch.cuda.memory_allocated()

        def post(*_: Any, **__: Any) -> None:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - phases[name + ":base"]
            phases[name] = max(phases.get(name, 0), peak)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    peak_hook("dit", pipe.dit)
    peak_hook("vae_decoder", pipe.vae_decoder)
    peak_hook("t5", pipe.text_encoder_2)
    peak_hook("clip", pipe.text_encoder_1)
    sizes = [(512, 512), (1024, 1024), (1536, 640), (640, 1536), (1280, 1280), (1536, 1536), (2048, 2048)]
    per_size: dict[str, Any] = {}
    for w, h in sizes:
        phases.clear()
        torch.cuda.empty_cache()
        t = time.perf_counter()
        try:
            pipe(
                prompt=f"calibration {w}x{h}",
                seed=1,
                height=h,
                width=w,
                num_inference_steps=2,
                embedded_guidance=3.5,
                rand_device="cpu",
            )
            error = None
        except torch.OutOfMemoryError as exc:
            error = str(exc).splitlines()[0]
        per_size[f"{w}x{h}"] = {
            "tokens": (w // 16) * (h // 16) + 512,
            "dit_peak_gib": phases.get("dit", 0) / GIB,
            "vae_decode_peak_gib": phases.get("vae_decoder", 0) / GIB,
            "t5_peak_gib": phases.get("t5", 0) / GIB,
            "clip_peak_gib": phases.get("clip", 0) / GIB,
            "seconds_2_steps": time.perf_counter() - t,
            "error": error,
        }
        outside(f"after {w}x{h}")
        print(w, h, json.dumps(per_size[f"{w}x{h}"]), flush=True)
    out["per_size"] = per_size
    tiles: dict[str, float] = {}
    for t in (32, 48, 64, 80, 96, 128):
        torch.cuda.empty_cache()
        latent = torch.randn(1, 16, t, t, device="cuda", dtype=torch.bfloat16)
        phases.clear()
        with torch.no_grad():
            pipe.vae_decoder(latent)
        tiles[str(t)] = phases["vae_decoder"] / GIB
    out["vae_decode_per_latent_tile_gib"] = tiles
    outside("after tiles")
    out["rss_end_gib"] = _rss_gib()
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
