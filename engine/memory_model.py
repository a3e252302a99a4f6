"""How much GPU memory one request needs besides the weights, from its size alone.

Pure arithmetic (no torch), so the rules are tested on a CPU. The constants were measured
(docs/performance.md, "Memory model"): the DiT blocks' temporaries by running them on the meta device
under a tensor-lifetime tracker (`bench/block_memory.py`), the VAE decoder's peaks on an H200 with torch
2.11 and diffsynth 2.1.12 (`bench/calibrate_memory.py`). Each carries a margin: a plan that is short by
one allocation fails a whole job.

- The DiT's temporaries grow with the token count (image tokens plus 512 text tokens); attention runs
  through memory-efficient kernels, so nothing is quadratic. DiffSynth's single block peaks at 270 KB a
  token (4.4 GiB at 2048x2048); the lean forwards (`engine.lean_blocks`) run everything but attention in
  token chunks, 48 KB a token plus 228 KB per token of a chunk.
- The VAE decoder's convolutions take 2.2 KB per output pixel, and its mid-block attention (one head of
  512 channels, too wide for the fused kernels) 9.2 bytes per pair of latent pixels: 36.8 GiB at
  2048x2048. The larger of the two is the peak. Large images are decoded in overlapping tiles.
- The VAE encoder (image-to-image) mirrors the decoder: the same channel widths at each resolution and
  the same one-head mid-block attention over the latent pixels, so its peaks are taken to be the
  decoder's (not yet measured on its own: `bench/calibrate_memory.py` measures the decoder). A 2048x2048
  input asks for the same 37 GiB of attention whole, so large inputs are encoded in tiles too.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2
LATENT_SCALE = 8  # VAE: one latent pixel per 8x8 image pixels
PATCH = 16  # DiT: one token per 16x16 image pixels
TEXT_TOKENS = 512

DIT_WHOLE_BYTES_PER_TOKEN = 272_000  # DiffSynth's single block, the larger of the two kinds
DIT_LEAN_BYTES_PER_TOKEN = 48_000
DIT_LEAN_BYTES_PER_CHUNK_TOKEN = 240_000
DIT_STREAM_BYTES_PER_TOKEN = 24_000  # what the step holds between blocks: hidden states, rotary tables
DIT_FIXED_BYTES = 256 * MIB  # a linear's weight converted for its matmul, latents, modulation
CHUNK_TOKENS = (4096, 2048, 1024)  # tried largest first
VAE_BYTES_PER_PIXEL = 2304  # convolution activations per output pixel (measured 2180)
VAE_ATTENTION_BYTES_PER_PAIR = 10  # per pair of latent pixels (measured 9.2)
VAE_FIXED_BYTES = 128 * MIB
T5_ACTIVATION_BYTES = 256 * MIB  # one prompt of 512 tokens through one T5 layer (measured 0.23 GiB)
STANDARD_SIDE = 1024  # images up to this size decode whole (exactly as DiffSynth) on every supported card
# Latent tile sizes tried for a tiled decode, largest first (in latent pixels; x8 for image pixels),
# and how far neighbouring tiles overlap: their seam is blended over this many latent pixels.
TILE_SIZES = (128, 96, 80, 64, 48, 32)
TILE_OVERLAP = 16


def image_tokens(width: int, height: int) -> int:
    return (width // PATCH) * (height // PATCH)


def dit_step_bytes(width: int, height: int, chunk: int | None) -> int:
    """Peak temporary bytes of one DiT step at this size: whole-token forwards (`chunk` None) or lean
    forwards over chunks of `chunk` tokens."""
    tokens = image_tokens(width, height) + TEXT_TOKENS
    if chunk is None:
        per_token = DIT_WHOLE_BYTES_PER_TOKEN + DIT_STREAM_BYTES_PER_TOKEN
        return DIT_FIXED_BYTES + per_token * tokens
    per_token = DIT_LEAN_BYTES_PER_TOKEN + DIT_STREAM_BYTES_PER_TOKEN
    return DIT_FIXED_BYTES + per_token * tokens + DIT_LEAN_BYTES_PER_CHUNK_TOKEN * min(chunk, tokens)


def plan_dit_chunk(width: int, height: int, room_bytes: int) -> tuple[bool, int | None]:
    """(fits, chunk): whole-token forwards when they fit (exactly DiffSynth's), else the largest chunk
    that fits."""
    if dit_step_bytes(width, height, None) <= room_bytes:
        return True, None
    for chunk in CHUNK_TOKENS:
        if dit_step_bytes(width, height, chunk) <= room_bytes:
            return True, chunk
    return False, None


def vae_decode_bytes(latent_width: int, latent_height: int) -> int:
    """Peak bytes of one untiled VAE decode of a latent of this size."""
    pixels = latent_width * latent_height
    convolutions = VAE_BYTES_PER_PIXEL * pixels * LATENT_SCALE * LATENT_SCALE
    attention = VAE_ATTENTION_BYTES_PER_PAIR * pixels * pixels
    return VAE_FIXED_BYTES + max(convolutions, attention)


@dataclass(frozen=True, slots=True)
class DecodePlan:
    """How the VAE decodes one image: whole (`tile` None, as DiffSynth does) or in overlapping tiles."""

    tile: int | None  # latent pixels per tile side
    overlap: int = TILE_OVERLAP

    @property
    def tiled(self) -> bool:
        return self.tile is not None

    def describe(self) -> str:
        if self.tile is None:
            return "whole"
        side = self.tile * LATENT_SCALE
        return f"tiles of {side}x{side} px"


def plan_decode(width: int, height: int, room_bytes: int) -> DecodePlan | None:
    """The decode of a width x height image that fits in `room_bytes`; None if not even the smallest
    tile does. Whole when it fits, so images that fit decode exactly as DiffSynth decodes them."""
    lw, lh = width // LATENT_SCALE, height // LATENT_SCALE
    if vae_decode_bytes(lw, lh) <= room_bytes:
        return DecodePlan(tile=None)
    for tile in TILE_SIZES:
        if tile >= max(lw, lh):
            continue  # no smaller than the image, or it is not a tiling
        if vae_decode_bytes(min(tile, lw), min(tile, lh)) <= room_bytes:
            return DecodePlan(tile=tile)
    return None


def plan_encode(width: int, height: int, room_bytes: int) -> DecodePlan | None:
    """The VAE encode of a width x height input image that fits in `room_bytes` (tiles in latent
    pixels, as for decoding); None if not even the smallest tile does. Whole when it fits."""
    return plan_decode(width, height, room_bytes)


def planned_room_bytes(max_pixels: int) -> int:
    """The room a plan keeps for the image phase: the standard size decodes whole, and the largest
    allowed image runs its DiT step in chunks of 2048 tokens (its decode is tiled to fit)."""
    side = int(max_pixels**0.5) // PATCH * PATCH
    standard = min(STANDARD_SIDE, side) // LATENT_SCALE
    return max(vae_decode_bytes(standard, standard), dit_step_bytes(side, side, 2048))


@dataclass(frozen=True, slots=True)
class RequestFit:
    """How a request runs in the room the plan keeps, or that it cannot."""

    room_bytes: int
    needed_bytes: int  # what the leanest way to run it needs (for the refusal message)
    fits: bool
    dit_chunk: int | None  # tokens per chunk for the DiT, None for whole-token forwards
    decode: DecodePlan | None
    encode: DecodePlan | None = None  # image-to-image: how the input image is encoded


def fit_request(width: int, height: int, room_bytes: int, *, encodes: bool = False) -> RequestFit:
    """Check one request against the room the plan keeps for the image phase; `encodes`: it starts
    from an input image, which the VAE encodes first (in the same room, before the DiT steps).

    Several images of one request run one after another, so the room is that of one image."""
    dit_fits, chunk = plan_dit_chunk(width, height, room_bytes)
    decode = plan_decode(width, height, room_bytes)
    encode = plan_encode(width, height, room_bytes) if encodes else None
    smallest = dit_step_bytes(width, height, CHUNK_TOKENS[-1])
    fits = dit_fits and decode is not None and (encode is not None or not encodes)
    return RequestFit(room_bytes, smallest, fits, chunk, decode, encode)


def largest_square_side(room_bytes: int, limit: int = 4096) -> int:
    """The side of the largest square image (a multiple of 64) that fits `room_bytes`; 0 if none."""
    best = 0
    for side in range(64, limit + 1, 64):
        if fit_request(side, side, room_bytes).fits:
            best = side
    return best
