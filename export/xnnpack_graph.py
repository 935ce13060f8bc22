"""Graph rewrites that keep a ViT inside ONE XNNPACK partition.

ExecuTorch's XNNPACK partitioner (1.5) has no layer norm, and the decomposition of
``scaled_dot_product_attention`` leaves mask ops (``logical_not``, ``any``, ``where``) and
``expand_copy`` that XNNPACK cannot take either.  Each of them splits the graph: the 12-block
ViT-B became dozens of delegate calls with portable (single-threaded) kernels between them,
and lowering ran the XNNPACK passes once per partition (about 70 s per k for the base model).

Written with ops the partitioner does take -- layer norm as a 4-D mean over the innermost
dimensions (XNNPACK's global average pooling), ``rsqrt``, ``mul``, ``add``; attention as
``bmm`` / ``_softmax`` on ``(batch x heads, tokens, 64)`` tensors -- the same computation stays
in one partition.  The rewrites share the original parameters (nothing is copied) and match the
timm modules to float rounding (the exporter validates every artifact against PyTorch).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["layer_norm", "attention", "XnnLayerNorm", "XnnAttention", "xnnpack_friendly"]


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension of ``(B, N, E)``, in XNNPACK-partitionable ops."""
    B, N, E = x.shape
    x4 = x.reshape(B, N, 1, E)
    d = x4 - x4.mean(dim=(2, 3), keepdim=True)
    var = (d * d).mean(dim=(2, 3), keepdim=True)
    return (d * torch.rsqrt(var + eps)).reshape(B, N, E) * weight + bias


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Softmax attention of ``(B, N, heads*head_dim)`` projections with 3-D ``bmm`` (no expand)."""
    B, N, _ = q.shape

    def split(t):
        return t.reshape(B, N, heads, head_dim).permute(0, 2, 1, 3).reshape(B * heads, N, head_dim)

    scores = torch.bmm(split(q) * (head_dim ** -0.5), split(k).permute(0, 2, 1))
    out = torch.bmm(torch.softmax(scores, dim=-1), split(v))
    return out.reshape(B, heads, N, head_dim).permute(0, 2, 1, 3).reshape(B, N, heads * head_dim)


class XnnLayerNorm(nn.Module):
    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class XnnAttention(nn.Module):
    """timm ``Attention`` (qkv, proj; no q/k norm) written with :func:`attention`."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.qkv, self.proj = attn.qkv, attn.proj
        self.heads, self.head_dim = attn.num_heads, attn.head_dim

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("XnnAttention computes unmasked attention only")
        e = self.heads * self.head_dim
        qkv = self.qkv(x)
        out = attention(qkv[:, :, :e], qkv[:, :, e:2 * e], qkv[:, :, 2 * e:], self.heads, self.head_dim)
        return self.proj(out)


def xnnpack_friendly(vit: nn.Module) -> nn.Module:
    """Swap a timm ViT's layer norms and attention for :class:`XnnLayerNorm` / :class:`XnnAttention` in place."""
    for name, mod in list(vit.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(mod, child_name, XnnLayerNorm(child))
            elif type(child).__name__ == "Attention" and hasattr(child, "qkv"):
                if not isinstance(getattr(child, "q_norm", nn.Identity()), nn.Identity):
                    raise ValueError("q/k norm attention is not supported")
                setattr(mod, child_name, XnnAttention(child))
    return vit
