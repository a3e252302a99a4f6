"""Reading checkpoints without a memory map (engine.weight_files), blocks placed where a plan puts them
(engine.layer_streaming's layout), and the tiled VAE decode (engine.vae_tiling), on the CPU."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
import torch

from engine.memory_model import DecodePlan
from engine.vae_tiling import decode_tiled, tile_starts
from engine.weight_files import CheckpointError, CheckpointReader, index_checkpoint, model_to_file_names

_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3", torch.int64: "I64"}


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file written by hand (the format is a JSON header and raw little-endian bytes)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        raw = bytes(tensor.contiguous().reshape(-1).view(torch.uint8).tolist())
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[list[Path], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.w": torch.randn((8, 16), generator=gen).to(torch.float8_e4m3fn),
        "model.b": torch.randn((8,), generator=gen).to(torch.bfloat16),
        "model.ids": torch.arange(5, dtype=torch.int64),
    }
    second = {"model.norm": torch.randn((16,), generator=gen)}
    first_path, second_path = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _write_safetensors(first_path, tensors)
    _write_safetensors(second_path, second)
    return [first_path, second_path], {**tensors, **second}


def test_every_shard_is_indexed_from_its_header(
    checkpoint: tuple[list[Path], dict[str, torch.Tensor]],
) -> None:
    paths, tensors = checkpoint
    index = index_checkpoint(paths)
    assert set(index) == set(tensors)
    assert index["model.norm"].path == paths[1]
    assert index["model.w"].dtype == torch.float8_e4m3fn and index["model.w"].shape == (8, 16)
    assert index["model.w"].nbytes == 8 * 16


def test_tensors_are_read_into_place_one_at_a_time_and_converted(
    checkpoint: tuple[list[Path], dict[str, torch.Tensor]],
) -> None:
    paths, tensors = checkpoint
    index = index_checkpoint(paths)
    read: list[int] = []
    with CheckpointReader(torch.device("cpu"), read.append) as reader:
        same = torch.empty(8, 16, dtype=torch.float8_e4m3fn)
        reader.read_block([(index["model.w"], same)])  # straight into the destination
        widened = torch.empty(8, dtype=torch.float32)
        reader.read_block([(index["model.b"], widened)])  # through the staging buffer, converted
        norm = torch.empty(16, dtype=torch.bfloat16)
        reader.read_block([(index["model.norm"], norm)])
        ids = torch.empty(5, dtype=torch.int64)
        reader.read_block([(index["model.ids"], ids)])
    assert torch.equal(same.view(torch.uint8), tensors["model.w"].view(torch.uint8))
    assert torch.equal(widened, tensors["model.b"].float())
    assert torch.equal(norm, tensors["model.norm"].to(torch.bfloat16))
    assert torch.equal(ids, tensors["model.ids"])
    assert sum(read) == reader.bytes_read == 8 * 16 + 8 * 2 + 16 * 4 + 5 * 8


def test_a_cut_off_file_and_a_wrong_shape_say_so(
    checkpoint: tuple[list[Path], dict[str, torch.Tensor]],
) -> None:
    paths, _ = checkpoint
    index = index_checkpoint(paths)
    with CheckpointReader(torch.device("cpu")) as reader, pytest.raises(CheckpointError, match="shape"):
        reader.read_block([(index["model.w"], torch.empty(3, 3, dtype=torch.float8_e4m3fn))])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-8])
    with CheckpointReader(torch.device("cpu")) as reader, pytest.raises(CheckpointError, match="cut-off"):
        reader.read_block([(index["model.norm"], torch.empty(16))])


def test_a_state_dict_converter_runs_on_names_alone() -> None:
    def converter(state_dict: dict[str, str]) -> dict[str, str]:  # DiffSynth's converters rename and alias
        out = {k.replace("model.", "net."): v for k, v in state_dict.items()}
        out["alias.w"] = state_dict["model.w"]
        return out

    names = model_to_file_names(["model.w", "model.b"], converter)
    assert names == {"net.w": "model.w", "net.b": "model.b", "alias.w": "model.w"}


@pytest.mark.parametrize(
    ("length", "tile"), [(256, 128), (144, 64), (112, 64), (40, 64), (160, 96), (33, 32)]
)
def test_tiles_cover_every_latent_pixel_and_overlap(length: int, tile: int) -> None:
    starts = tile_starts(length, tile, 16)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(length, s + tile)))
    assert covered == set(range(length))
    assert starts == sorted(starts) and starts[0] == 0
    assert all(b - a <= tile - 16 for a, b in itertools.pairwise(starts))


def _local_decoder(latents: torch.Tensor) -> torch.Tensor:
    """A decoder whose output pixel depends on its own latent pixel only: tiling must not change it."""
    mix = torch.linspace(-1, 1, 3 * latents.shape[1]).reshape(3, latents.shape[1], 1, 1)
    rgb = torch.nn.functional.conv2d(latents.float(), mix)
    return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")


@pytest.mark.parametrize(("height", "width"), [(144, 112), (64, 200), (96, 96)])
def test_a_tiled_decode_equals_the_whole_decode_for_a_local_decoder(height: int, width: int) -> None:
    latents = torch.randn(1, 16, height, width, generator=torch.Generator().manual_seed(1))
    whole = decode_tiled(_local_decoder, latents, DecodePlan(tile=None))
    tiled = decode_tiled(_local_decoder, latents, DecodePlan(tile=48))
    assert tiled.shape == whole.shape == (1, 3, height * 8, width * 8)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_seams_are_blended_not_cut() -> None:
    """A decoder that adds a different constant per tile: the blend ramps from one to the other."""
    calls = []

    def offset_decoder(latents: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return _local_decoder(latents) * 0 + float(len(calls))

    latents = torch.zeros(1, 16, 32, 112)
    out = decode_tiled(offset_decoder, latents, DecodePlan(tile=48, overlap=16))[0, 0, 0]
    assert len(calls) == 3  # starts 0, 32, 64
    diffs = (out[1:] - out[:-1]).abs()
    assert float(diffs.max()) < 0.1  # no jump between neighbouring pixels
    assert float(out[0]) == 1.0 and float(out[-1]) == 3.0


def test_a_block_is_read_in_parallel_and_converted(
    checkpoint: tuple[list[Path], dict[str, torch.Tensor]],
) -> None:
    paths, tensors = checkpoint
    index = index_checkpoint(paths)
    staging_sizes: list[int] = []

    def host_buffer(nbytes: int) -> torch.Tensor:
        staging_sizes.append(nbytes)
        return torch.empty(nbytes, dtype=torch.uint8)

    block = torch.zeros(1024, dtype=torch.uint8)  # one packed buffer, as a block's
    w = block[:128].view(torch.float8_e4m3fn).view(8, 16)  # stored as in the file: read in place
    b = block[256:288].view(torch.float32)  # bf16 in the file: staged and converted
    norm = block[512:544].view(torch.bfloat16)  # float32 in the file
    with CheckpointReader(torch.device("cpu"), host_buffer=host_buffer) as reader:
        reader.read_block([(index["model.w"], w), (index["model.b"], b), (index["model.norm"], norm)])
        assert reader.bytes_read == 128 + 16 + 64
    assert torch.equal(w.view(torch.uint8), tensors["model.w"].view(torch.uint8))
    assert torch.equal(b, tensors["model.b"].float())
    assert torch.equal(norm, tensors["model.norm"].to(torch.bfloat16))
    assert staging_sizes == [512]  # the two staged tensors, each aligned to 256 bytes


def test_t5_sizes_from_headers_follow_the_storage_rule() -> None:
    """Linear weights (2-D, not the position bias) in the storage type, the rest in bf16; blocks by
    number; every model name outside the blocks counts, also two filled from one stored tensor."""
    from pathlib import Path

    import torch

    from engine.diffsynth_backend import t5_sizes_from_checkpoint
    from engine.fp8_linear import FP8
    from engine.layer_streaming import block_layout_bytes
    from engine.weight_files import StoredTensor

    def stored(*shape: int) -> StoredTensor:
        n = 1
        for d in shape:
            n *= d
        return StoredTensor(Path("t5.safetensors"), 0, 2 * n, torch.bfloat16, shape)

    index = {
        "shared.weight": stored(100, 8),
        "encoder.final_layer_norm.weight": stored(8),
        "encoder.block.0.layer.0.SelfAttention.q.weight": stored(8, 8),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": stored(32, 4),
        "encoder.block.0.layer.0.layer_norm.weight": stored(8),
        "encoder.block.1.layer.1.DenseReluDense.wi_0.weight": stored(24, 8),
        "encoder.block.1.layer.1.layer_norm.weight": stored(8),
    }
    names = {name: name for name in index} | {"encoder.embed_tokens.weight": "shared.weight"}
    sizes = t5_sizes_from_checkpoint(index, names, FP8)
    bf16 = torch.bfloat16
    block0 = block_layout_bytes([(64, FP8, bf16), (128, bf16, bf16), (8, bf16, bf16)])
    block1 = block_layout_bytes([(192, FP8, bf16), (8, bf16, bf16)])
    assert sizes.block_bytes == (block0[0], block1[0])
    assert sizes.compute_bytes == max(block0[1], block1[1]) > 0
    assert sizes.outside_bytes == 2 * 800 * 2 + 8 * 2
    assert t5_sizes_from_checkpoint(index, names, bf16).compute_bytes == 0


@pytest.mark.gpu
@pytest.mark.parametrize("storage", ["fp8", "bf16"])
def test_t5_sizes_from_headers_equal_diffsynths_t5_as_laid_out(storage: str) -> None:
    """The plan is made from T5's headers before transformers is imported; the model laid out later
    must come to the same sizes (else the engine plans twice). Needs diffsynth (the device)."""
    from pathlib import Path

    import torch

    pytest.importorskip("diffsynth")
    from diffsynth.core.vram.initialization import skip_model_initialization
    from diffsynth.models.flux_text_encoder_t5 import FluxTextEncoderT5
    from diffsynth.utils.state_dict_converters.flux_text_encoder_t5 import (
        FluxTextEncoderT5StateDictConverter,
    )

    from engine.diffsynth_backend import COMPUTE_DTYPE, _outside_bytes, _t5_dtypes, t5_sizes_from_checkpoint
    from engine.fp8_linear import FP8
    from engine.layer_streaming import BlockSizes, _layout
    from engine.weight_files import StoredTensor, model_to_file_names

    with skip_model_initialization():  # as the engine builds it
        t5 = FluxTextEncoderT5()
    files = {  # the checkpoint's names: the model's, without the alias DiffSynth's converter adds
        k: StoredTensor(Path("t5"), 0, v.numel() * 2, torch.bfloat16, tuple(v.shape))
        for k, v in t5.state_dict().items()
        if k != "encoder.embed_tokens.weight"
    }
    dtype = FP8 if storage == "fp8" else COMPUTE_DTYPE
    predicted = t5_sizes_from_checkpoint(
        files, model_to_file_names(files, FluxTextEncoderT5StateDictConverter), dtype
    )
    rule = _t5_dtypes(dtype)
    layouts = [_layout(block, rule) for block in t5.encoder.block]

    class Blocks:  # what _outside_bytes reads of StreamedBlocks
        modules = tuple(t5.encoder.block)
        dtype_of = staticmethod(rule)

    laid_out = BlockSizes(
        tuple(size for _, size, _ in layouts),
        max(c for _, _, c in layouts),
        _outside_bytes(t5, Blocks),  # type: ignore[arg-type]
    )
    assert predicted == laid_out
