"""PNG text metadata: written in a fixed order, read back, deterministic bytes."""

from __future__ import annotations

from PIL import Image

from engine.messages import GenerationRequest
from engine.png_metadata import PngMetadata, encode_png, majicbot_version, read_metadata

REQUEST = GenerationRequest(
    prompt="a café at dusk, 夕暮れ", negative_prompt="text, watermark", seed=2**40 + 3, steps=20,
    width=64, height=48, guidance=3.5,
)  # fmt: skip


def test_metadata_round_trips_through_the_png() -> None:
    meta = PngMetadata.for_request(REQUEST, model="majicflus_v134.safetensors", strategy="low_vram")
    png = encode_png(Image.new("RGB", (64, 48), (10, 20, 30)), meta)
    assert read_metadata(png) == meta
    assert meta.version == majicbot_version()


def test_the_same_image_and_metadata_give_the_same_bytes() -> None:
    meta = PngMetadata.for_request(REQUEST, model="m", strategy="s")
    image = Image.new("RGB", (64, 48), (200, 100, 0))
    assert encode_png(image, meta) == encode_png(image.copy(), meta)


def test_chunks_name_every_setting_that_reproduces_the_image() -> None:
    meta = PngMetadata.for_request(REQUEST, model="m", strategy="s")
    keys = [k for k, _ in meta.chunks()]
    expected = "prompt negative_prompt seed steps size guidance image model memory_strategy Software"
    assert keys == expected.split()
    assert dict(meta.chunks())["size"] == "64x48"
