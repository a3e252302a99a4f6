"""Memory-lean forwards of the FLUX DiT blocks for large images: the same math, in token chunks.

At 2048x2048 a single block's temporaries reach 4.4 GiB (270 KB per token: the fused qkv+MLP projection,
float32 rotary intermediates, the MLP activation, the concatenation for the output projection), more than
a 6 or 8 GB card has beside the weights. Everything in a block except attention works token by token, so
these forwards run the projections, norms, rotary embedding and MLPs over chunks of tokens and keep only
q, k, v, the MLP activation and the outputs whole (about 60 KB per token). Attention itself still sees
every token at once, through the memory-efficient kernel.

Per element the operations are DiffSynth's own (FluxJointTransformerBlock, FluxSingleTransformerBlock
in diffsynth 2.1.12); only matrix products over fewer rows may be summed in another order, so the lean
path is used only for requests whose whole-token path does not fit (`engine.memory_model`).

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class ChunkSetting:
    """Tokens per chunk for the current request; None runs DiffSynth's own forwards."""

    tokens: int | None = None


def _spans(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(length, start + chunk)) for start in range(0, length, chunk)]


def single_block_forward(
    block: Any, x: torch.Tensor, temb: torch.Tensor, rope: torch.Tensor, chunk: int
) -> torch.Tensor:
    """FluxSingleTransformerBlock.forward over token chunks (text and image tokens together)."""
    batch, tokens, dim = x.shape
    heads, head_dim = block.num_heads, block.head_dim
    emb = block.norm.linear(block.norm.silu(temb))
    shift, scale, gate = emb.chunk(3, dim=1)
    q = torch.empty((batch, heads, tokens, head_dim), dtype=x.dtype, device=x.device)
    k, v = torch.empty_like(q), torch.empty_like(q)
    mlp = torch.empty((batch, tokens, 4 * dim), dtype=x.dtype, device=x.device)
    for s, e in _spans(tokens, chunk):
        normed = block.norm.norm(x[:, s:e]) * (1 + scale[:, None]) + shift[:, None]
        fused = block.to_qkv_mlp(normed)
        qkv = fused[:, :, : 3 * dim].view(batch, e - s, 3 * heads, head_dim).transpose(1, 2)
        qc, kc, vc = qkv.chunk(3, dim=1)
        qc, kc = block.norm_q_a(qc), block.norm_k_a(kc)
        qc, kc = block.apply_rope(qc, kc, rope[:, :, s:e])
        q[:, :, s:e], k[:, :, s:e], v[:, :, s:e] = qc, kc, vc
        mlp[:, s:e] = F.gelu(fused[:, :, 3 * dim :], approximate="tanh")
        del normed, fused, qkv, qc, kc, vc
    attended = F.scaled_dot_product_attention(q, k, v)
    del q, k, v
    attended = attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
    out = torch.empty_like(x)
    for s, e in _spans(tokens, chunk):
        projected = block.proj_out(torch.cat([attended[:, s:e], mlp[:, s:e]], dim=2))
        out[:, s:e] = x[:, s:e] + gate.unsqueeze(1) * projected
    return out


def double_block_forward(
    block: Any, a: torch.Tensor, b: torch.Tensor, temb: torch.Tensor, rope: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """FluxJointTransformerBlock.forward with the image stream (`a`) in token chunks; the 512 text
    tokens (`b`) run whole, as in DiffSynth."""
    attn = block.attn
    batch, image_tokens, _ = a.shape
    text_tokens = b.shape[1]
    tokens = text_tokens + image_tokens
    heads, head_dim = attn.num_heads, attn.head_dim
    emb_a = block.norm1_a.linear(F.silu(temb))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb_a.unsqueeze(1).chunk(6, dim=2)
    norm_b, gate_msa_b, shift_mlp_b, scale_mlp_b, gate_mlp_b = block.norm1_b(b, emb=temb)

    q = torch.empty((batch, heads, tokens, head_dim), dtype=a.dtype, device=a.device)
    k, v = torch.empty_like(q), torch.empty_like(q)
    qkv_b = attn.b_to_qkv(norm_b).view(batch, -1, 3 * heads, head_dim).transpose(1, 2)
    qb, kb, vb = qkv_b.chunk(3, dim=1)
    q[:, :, :text_tokens], k[:, :, :text_tokens] = attn.norm_q_b(qb), attn.norm_k_b(kb)
    v[:, :, :text_tokens] = vb
    del norm_b, qkv_b, qb, kb, vb
    for s, e in _spans(image_tokens, chunk):
        normed = block.norm1_a.norm(a[:, s:e]) * (1 + scale_msa) + shift_msa
        qkv = attn.a_to_qkv(normed).view(batch, -1, 3 * heads, head_dim).transpose(1, 2)
        qa, ka, va = qkv.chunk(3, dim=1)
        at = slice(text_tokens + s, text_tokens + e)
        q[:, :, at], k[:, :, at], v[:, :, at] = attn.norm_q_a(qa), attn.norm_k_a(ka), va
        del normed, qkv, qa, ka, va
    for s, e in _spans(tokens, chunk):
        q[:, :, s:e], k[:, :, s:e] = attn.apply_rope(q[:, :, s:e], k[:, :, s:e], rope[:, :, s:e])
    attended = F.scaled_dot_product_attention(q, k, v)
    del q, k, v
    attended = attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim)

    b = b + gate_msa_b * attn.b_to_out(attended[:, :text_tokens])
    b = b + gate_mlp_b * block.ff_b(block.norm2_b(b) * (1 + scale_mlp_b) + shift_mlp_b)
    out = torch.empty_like(a)
    for s, e in _spans(image_tokens, chunk):
        h = a[:, s:e] + gate_msa * attn.a_to_out(attended[:, text_tokens + s : text_tokens + e])
        out[:, s:e] = h + gate_mlp * block.ff_a(block.norm2_a(h) * (1 + scale_mlp) + shift_mlp)
        del h
    return out, b


LeanForward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], Any]


def _routed(original: Callable[..., Any], lean: LeanForward, setting: ChunkSetting) -> Callable[..., Any]:
    """A block's forward: DiffSynth's own, or the lean one while `setting.tokens` is set (never for the
    masks and IP-adapter inputs that majicbot does not use)."""

    def forward(
        hidden_states_a: torch.Tensor,
        hidden_states_b: torch.Tensor,
        temb: torch.Tensor,
        image_rotary_emb: torch.Tensor,
        attn_mask: Any = None,
        ipadapter_kwargs_list: Any = None,
    ) -> Any:
        if setting.tokens is None or attn_mask is not None or ipadapter_kwargs_list is not None:
            return original(
                hidden_states_a, hidden_states_b, temb, image_rotary_emb, attn_mask, ipadapter_kwargs_list
            )
        return lean(hidden_states_a, hidden_states_b, temb, image_rotary_emb, setting.tokens)

    return forward


def install(dit: torch.nn.Module, setting: ChunkSetting) -> None:
    """Route every block of `dit` through the lean forwards whenever `setting.tokens` is set.

    Hooks registered on the blocks (layer streaming) still run: `Module.__call__` calls the instance's
    `forward`."""
    for block in dit.blocks:  # type: ignore[union-attr]
        block.forward = _routed(block.forward, functools.partial(double_block_forward, block), setting)
    for block in dit.single_blocks:  # type: ignore[union-attr]

        def single(
            a: torch.Tensor,
            b: torch.Tensor,
            temb: torch.Tensor,
            rope: torch.Tensor,
            chunk: int,
            block: Any = block,
        ) -> Any:
            return single_block_forward(block, a, temb, rope, chunk), b

        block.forward = _routed(block.forward, single, setting)
