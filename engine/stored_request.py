"""The worker's `GenerationRequest` for a stored `ImageRequest`: the one place storage's request type
meets the worker's, shared by the claim loop and `majicbot generate` (which must not import the queue)."""

from __future__ import annotations

from engine.messages import GenerationRequest
from storage.jobs import ImageRequest


def generation_request(r: ImageRequest) -> GenerationRequest:
    """What the worker is asked to draw for a stored request."""
    return GenerationRequest(
        prompt=r.prompt,
        negative_prompt=r.negative_prompt,
        seed=r.seed,
        steps=r.steps,
        width=r.width,
        height=r.height,
        guidance=r.guidance,
    )
