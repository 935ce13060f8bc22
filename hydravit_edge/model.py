"""HydraViT: one Vision Transformer whose first k heads form a working subnetwork.

The parameters are exactly those of a timm :class:`~timm.models.vision_transformer.VisionTransformer`
(same state-dict keys and shapes; DeiT-B/16 for the default config), so timm and official
HydraViT checkpoints load as they are.  ``model(x, heads=k)`` runs the subnetwork that uses

* patch-embedding output channels ``[:64k]``, cls token / position embedding ``[..., :64k]``;
* every LayerNorm over the first ``64k`` features only, with weight/bias ``[:64k]``;
* the qkv rows of the first k heads of q, k and v (timm lays qkv out as ``(3, H, 64)``) and
  input columns ``[:64k]``; attention with k heads of 64 dims; proj ``[:64k, :64k]``;
* fc1 ``[:4*64k, :64k]``, fc2 ``[:64k, :4*64k]``, the final norm and the classifier's input
  columns ``[:64k]`` (or the separate classifier of k).

All slices are views of the full parameters; nothing is copied in a forward pass, and
gradients flow into exactly the sliced region (zero elsewhere).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from .config import HydraConfig

__all__ = ["HydraViT", "SliceLeaves", "build_timm_vit", "hydravit_base_patch16_224"]

_LN_EPS = 1e-6


def build_timm_vit(config: HydraConfig, k: Optional[int] = None, **overrides) -> VisionTransformer:
    """The plain timm ViT of width ``config.width(k)`` (``k=None``: the full model)."""
    k = config.num_heads if k is None else k
    kwargs = dict(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=config.width(k),
        depth=config.depth,
        num_heads=k,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        global_pool="token",
        class_token=True,
    )
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


class HydraViT(VisionTransformer):
    """A timm ViT with a head-count argument: ``model(x, heads=k)``.

    Build it from a :class:`HydraConfig`; ``model.subnet(k)`` extracts the k-head
    subnetwork as a standalone timm ``VisionTransformer``.
    """

    def __init__(self, config: HydraConfig | None = None, **timm_kwargs) -> None:
        config = config or HydraConfig()
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            global_pool="token",
            class_token=True,
            drop_path_rate=config.drop_path_rate,
            **timm_kwargs,
        )
        self.config = config
        if config.separate_heads:
            self.head_k = nn.ModuleDict(
                {str(k): nn.Linear(config.width(k), config.num_classes) for k in config.heads}
            )
            for lin in self.head_k.values():
                nn.init.trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        else:
            self.head_k = None
        self._leaves: Optional[SliceLeaves] = None

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, heads: Optional[int] = None) -> torch.Tensor:  # type: ignore[override]
        """Logits of the subnetwork with ``heads`` heads (default: the largest available k)."""
        k = self.config.max_heads if heads is None else self.config.check_heads(heads)
        return self.forward_heads(x, k)

    def forward_heads(self, x: torch.Tensor, k) -> torch.Tensor:
        """Forward pass of subnetwork ``k`` without argument checks.

        ``k`` may be a Python int or a symbolic int (``torch.export`` with a dynamic head
        count); only slicing and reshapes depend on it.
        """
        feats = self.forward_features_heads(x, k)
        return self.forward_head_heads(feats, k)

    def forward_features_heads(self, x: torch.Tensor, k) -> torch.Tensor:
        hd = self.config.head_dim
        e = hd * k
        pe = self.patch_embed.proj
        x = F.conv2d(x, self._w(pe.weight)[:e], self._w(pe.bias)[:e], stride=pe.stride)
        x = x.flatten(2).transpose(1, 2)  # B, N, e
        cls = self._w(self.cls_token)[:, :, :e].expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self._w(self.pos_embed)[:, :, :e]
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = x + blk.drop_path1(self._attention(blk.attn, self._ln(blk.norm1, x, e), k, e))
            x = x + blk.drop_path2(self._mlp(blk.mlp, self._ln(blk.norm2, x, e), e))
        return self._ln(self.norm, x, e)

    def forward_head_heads(self, x: torch.Tensor, k) -> torch.Tensor:
        e = self.config.head_dim * k
        x = x[:, 0]
        x = self.head_drop(x)
        if self.head_k is not None:
            head = self.head_k[str(int(k))]
            return head(x)
        return F.linear(x, self._w(self.head.weight)[:, :e], self._w(self.head.bias)[:])

    # ------------------------------------------------------------------ pieces
    def _w(self, p: torch.Tensor) -> "_Slicer":
        """``self._w(p)[idx]`` is ``p[idx]``, or its leaf view inside :meth:`slice_leaves`."""
        return _Slicer(p, self._leaves)

    def _ln(self, norm: nn.LayerNorm, x: torch.Tensor, e) -> torch.Tensor:
        return F.layer_norm(x, (e,), self._w(norm.weight)[:e], self._w(norm.bias)[:e], _LN_EPS)

    def _attention(self, attn: nn.Module, x: torch.Tensor, k, e) -> torch.Tensor:
        B, N, _ = x.shape
        hd = self.config.head_dim
        full = self.config.embed_dim
        w, b = self._w(attn.qkv.weight), self._w(attn.qkv.bias)
        # q, k and v rows of the first k heads: row blocks [0:e], [D:D+e], [2D:2D+e].
        if self._leaves is not None:
            # training: one GEMM as in timm (three narrow ones cost ~20% more at k=1); the weight
            # copy is 3*e*e floats, and backward splits the gradient back into the three views
            if e == full:
                qkv = F.linear(x, w[:, :], b[:])
            else:
                qkv = F.linear(x, torch.cat([w[i * full:i * full + e, :e] for i in range(3)]),
                               torch.cat([b[i * full:i * full + e] for i in range(3)]))
            q, kk, v = qkv.view(B, N, 3, k, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q = F.linear(x, w[:e, :e], b[:e])
            kk = F.linear(x, w[full:full + e, :e], b[full:full + e])
            v = F.linear(x, w[2 * full:2 * full + e, :e], b[2 * full:2 * full + e])
            q = q.view(B, N, k, hd).transpose(1, 2)
            kk = kk.view(B, N, k, hd).transpose(1, 2)
            v = v.view(B, N, k, hd).transpose(1, 2)
        dropout_p = attn.attn_drop.p if self.training else 0.0
        o = F.scaled_dot_product_attention(q, kk, v, dropout_p=dropout_p)
        o = o.transpose(1, 2).reshape(B, N, e)
        o = F.linear(o, self._w(attn.proj.weight)[:e, :e], self._w(attn.proj.bias)[:e])
        return attn.proj_drop(o)

    def _mlp(self, mlp: nn.Module, x: torch.Tensor, e) -> torch.Tensor:
        h = int(self.config.mlp_ratio * self.config.head_dim) * (e // self.config.head_dim)
        x = F.linear(x, self._w(mlp.fc1.weight)[:h, :e], self._w(mlp.fc1.bias)[:h])
        x = mlp.act(x)
        x = mlp.drop1(x)
        x = F.linear(x, self._w(mlp.fc2.weight)[:e, :h], self._w(mlp.fc2.bias)[:e])
        return mlp.drop2(x)

    @contextlib.contextmanager
    def slice_leaves(self) -> Iterator["SliceLeaves"]:
        """Forward passes inside this context read every weight slice as a leaf view.

        Each slice ``p[idx]`` the forward takes becomes ``p.detach()[idx]`` with
        ``requires_grad``: it shares ``p``'s storage, and backward writes its gradient
        there, sized to the slice, instead of a zero-filled full-size ``p.grad``.  The
        trainer steps the optimizer over these views (:mod:`hydravit_edge.train.subnet_step`),
        so a step through subnetwork k touches only subnetwork k's weights.
        """
        leaves = SliceLeaves()
        prev, self._leaves = self._leaves, leaves
        try:
            yield leaves
        finally:
            self._leaves = prev

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def subnet_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """The k-head subnetwork's weights under timm ViT keys (copies, contiguous)."""
        k = self.config.check_heads(k)
        cfg = self.config
        e, h, full = cfg.width(k), cfg.mlp_hidden(k), cfg.embed_dim
        out: dict[str, torch.Tensor] = {}
        for name, t in self.state_dict().items():
            if name.startswith("head_k.") or name.startswith("head."):
                continue
            if name == "cls_token" or name == "pos_embed":
                s = t[..., :e]
            elif name.startswith("patch_embed.proj."):
                s = t[:e]
            elif name.endswith(".qkv.weight"):
                s = torch.cat([t[i * full:i * full + e, :e] for i in range(3)])
            elif name.endswith(".qkv.bias"):
                s = torch.cat([t[i * full:i * full + e] for i in range(3)])
            elif name.endswith("mlp.fc1.weight"):
                s = t[:h, :e]
            elif name.endswith("mlp.fc1.bias"):
                s = t[:h]
            elif name.endswith("mlp.fc2.weight"):
                s = t[:e, :h]
            elif t.dim() == 2:  # proj
                s = t[:e, :e]
            elif t.dim() == 1:  # norms, proj / fc2 bias
                s = t[:e]
            else:  # pragma: no cover - guards future timm changes
                raise RuntimeError(f"do not know how to slice parameter {name} {tuple(t.shape)}")
            out[name] = s.clone().contiguous()
        if self.head_k is not None:
            head = self.head_k[str(k)]
            out["head.weight"] = head.weight.detach().clone()
            out["head.bias"] = head.bias.detach().clone()
        else:
            out["head.weight"] = self.head.weight[:, :e].clone().contiguous()
            out["head.bias"] = self.head.bias.clone()
        return out

    def subnet(self, k: int) -> VisionTransformer:
        """The k-head subnetwork as a standalone timm ``VisionTransformer`` (embed 64k, k heads)."""
        k = self.config.check_heads(k)
        vit = build_timm_vit(self.config, k)
        vit.load_state_dict(self.subnet_state_dict(k), strict=True)
        return vit.train(self.training)

    @torch.no_grad()
    def narrow(self, kmax: int) -> "HydraViT":
        """The HydraViT made of the first ``kmax`` heads (a copy, in eval mode).

        ``m.narrow(kmax).forward_heads(x, k) == m.forward_heads(x, k)`` for every k <= kmax, so a
        single artifact for heads up to kmax stores only the weights those heads use.  Returns
        the model itself when kmax is already its head count.
        """
        cfg = self.config
        kmax = cfg.check_heads(kmax)
        if kmax == cfg.num_heads:
            return self
        heads = tuple(k for k in cfg.heads if k <= kmax) or (kmax,)
        small = HydraViT(cfg.replace(num_heads=kmax, heads=heads, drop_path_rate=0.0))
        sd = self.subnet_state_dict(kmax)
        if self.head_k is not None:
            e = cfg.width(kmax)
            sd["head.weight"] = self.head.weight.detach()[:, :e].clone()
            sd["head.bias"] = self.head.bias.detach().clone()
            for k in heads:
                sd[f"head_k.{k}.weight"] = self.head_k[str(k)].weight.detach().clone()
                sd[f"head_k.{k}.bias"] = self.head_k[str(k)].bias.detach().clone()
        small.load_state_dict(sd, strict=True)
        return small.eval()

    def extra_repr(self) -> str:
        c = self.config
        return f"heads={list(c.heads)}, head_dim={c.head_dim}, separate_heads={c.separate_heads}"


def _index_key(idx) -> tuple:
    idx = idx if isinstance(idx, tuple) else (idx,)
    return tuple((s.start, s.stop, s.step) if isinstance(s, slice) else ("...",) if s is Ellipsis else s
                 for s in idx)


class SliceLeaves:
    """The leaf views one forward pass took (see :meth:`HydraViT.slice_leaves`)."""

    def __init__(self) -> None:
        self.items: dict[tuple, tuple[torch.Tensor, Any, torch.Tensor]] = {}

    def get(self, p: torch.Tensor, idx) -> torch.Tensor:
        key = (id(p), _index_key(idx))
        hit = self.items.get(key)
        if hit is None:
            leaf = p.detach()[idx]
            if p.requires_grad:
                leaf.requires_grad_(True)
            hit = self.items[key] = (p, idx, leaf)
        return hit[2]

    def by_param(self) -> dict[torch.Tensor, list[tuple[Any, torch.Tensor]]]:
        """``{param: [(index, leaf), ...]}`` in the order the forward took them."""
        out: dict[torch.Tensor, list] = {}
        for p, idx, leaf in self.items.values():
            out.setdefault(p, []).append((idx, leaf))
        return out


class _Slicer:
    __slots__ = ("p", "leaves")

    def __init__(self, p: torch.Tensor, leaves: Optional[SliceLeaves]) -> None:
        self.p, self.leaves = p, leaves

    def __getitem__(self, idx) -> torch.Tensor:
        return self.p[idx] if self.leaves is None else self.leaves.get(self.p, idx)


_TIMM_INFRA_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_strict")


def _config_from_kwargs(base: HydraConfig, kwargs: dict) -> HydraConfig:
    """HydraConfig from ``timm.create_model`` keyword arguments (timm's own plumbing ignored)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(HydraConfig)}
    kw = {k: v for k, v in kwargs.items() if k not in _TIMM_INFRA_KWARGS}
    unknown = sorted(set(kw) - fields)
    if unknown:
        raise TypeError(f"unsupported HydraViT arguments {unknown}; HydraConfig fields are {sorted(fields)}")
    return base.replace(**kw)


@register_model
def hydravit_base_patch16_224(pretrained: bool = False, **kwargs) -> HydraViT:
    """HydraViT with 12 stacked heads on DeiT-B/16; k=3/6/12 equal DeiT-tiny/small/base.

    ``timm.create_model('hydravit_base_patch16_224', heads=(3, ..., 12))``.  No weights are
    downloaded: load a checkpoint with :func:`hydravit_edge.load_checkpoint`.
    """
    if pretrained:
        raise ValueError(
            "hydravit_base_patch16_224 has no downloadable weights; "
            "use hydravit_edge.load_checkpoint(PATH) with the official release or your own run"
        )
    return HydraViT(_config_from_kwargs(HydraConfig(), kwargs))


@register_model
def hydravit_tiny_digits(pretrained: bool = False, **kwargs) -> HydraViT:
    """The small 12-head model used for the embedded digits data (16px, patch 4, depth 3, 16-dim heads)."""
    from .config import PRESETS

    if pretrained:
        raise ValueError("hydravit_tiny_digits has no downloadable weights; train one with `hydravit-edge train`")
    return HydraViT(_config_from_kwargs(PRESETS["tiny"], kwargs))

