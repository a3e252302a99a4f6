"""Settings of the engine (the `[engine]` section of the config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineSettings(BaseModel):
    """How the GPU worker runs. Passed whole to the worker process and to a backend factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(
        default="diffsynth",
        description='"diffsynth", or an import path "package.module:factory" whose factory(settings, report) '
        "returns an object with generate(request, on_step) -> a list of PIL images",
    )
    model_dir: Path = Field(default=Path("data/models"), description="Where `majicbot download` puts files.")
    device: str = Field(default="cuda:0", description="The torch device the worker uses.")
    vram_budget_gib: float | None = Field(
        default=None,
        gt=0,
        description="GPU memory the worker may use in all (its CUDA context included); unset means "
        "what is free on the card when the engine starts, less a margin. Decides what stays resident "
        "on the GPU and what is streamed from CPU memory.",
    )
    max_pixels: int = Field(
        default=2048 * 2048,
        ge=256 * 256,
        description="The largest width x height the engine keeps GPU memory for; keep it at least "
        "limits.max_pixels. Larger requests are refused before they start.",
    )
    matmul: Literal["bf16", "fp8"] = Field(
        default="bf16",
        description='"bf16": float8-stored weights computed in bf16, as the majicflus WebUI does '
        '(identical to DiffSynth\'s pipeline). "fp8": float8 activation matmuls, faster on GPUs of compute '
        "capability 8.9+ and less exact (docs/performance.md gives both).",
    )
    text_encoder_storage: Literal["fp8", "bf16"] = Field(
        default="fp8",
        description="How T5's linear weights are kept in host memory: fp8 halves its 9.5 GB (computed in "
        "bf16 either way; docs/performance.md gives the effect on images).",
    )
    default_steps: int = Field(default=20, ge=1, le=100, description="Denoising steps when none are given.")
    default_guidance: float = Field(default=3.5, ge=0, le=20, description="FLUX embedded guidance.")
    job_timeout_s: float = Field(default=600, gt=0, description="A job running longer is stopped and failed.")
    load_timeout_s: float = Field(
        default=900, gt=0, description="Model loading longer than this is an error."
    )
    prompt_cache_size: int = Field(default=32, ge=0, description="Prompt embeddings kept for rerolls.")
    restart_backoff_s: tuple[float, float] = Field(
        default=(1.0, 60.0), description="A dead worker is restarted after min, doubling up to max seconds."
    )
