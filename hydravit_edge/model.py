"""HydraViT: one Vision Transformer whose first k heads form a working subnetwork.

The parameters are exactly those of a timm :class:`~timm.models.vision_transformer.VisionTransformer`
(same state-dict keys and shapes; DeiT-B/16 for the default config), so timm and official
HydraViT checkpoints load as they are.  ``model(x, heads=k)`` runs the subnetwork that uses the
first ``head_dim*k`` features of every tensor, the q/k/v rows of the first k heads and the first
``int(head_dim*k*mlp_ratio)`` MLP units; the exact cut of every parameter is the model's slicing
table (:mod:`hydravit_edge.slicing`, ``model.slicing``), which the forward, ``subnet(k)``,
``narrow(kmax)``, checkpoint loading and the exporters all read.

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
from .errors import UsageError
from .slicing import Cut, SliceTable, slicing_table, take, units

__all__ = ["HydraViT", "SliceLeaves", "TIMM_OPTIONS", "build_timm_vit", "hydravit_base_patch16_224"]

_LN_EPS = 1e-6

#: timm options set from the HydraConfig (pass them there, not as timm keyword arguments).
_CONFIG_OPTIONS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads",
                   "mlp_ratio", "qkv_bias", "global_pool", "class_token", "drop_path_rate")
#: timm options the sliced forward honours: dropout rates, initialisation, LayerScale (a slice of each
#: gamma), qk-norm (per head, weights shared whole), an elementwise MLP activation, device and dtype.
TIMM_OPTIONS = ("init_values", "qk_norm", "drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate",
                "weight_init", "fix_init", "act_layer", "device", "dtype")


def _check_timm_options(options: dict) -> None:
    """Raise UsageError for a timm option the sliced forward cannot honour (others at their defaults pass)."""
    import inspect

    defaults = {n: p.default for n, p in inspect.signature(VisionTransformer.__init__).parameters.items()}
    for name, value in options.items():
        if name in _CONFIG_OPTIONS:
            raise UsageError(f"HydraViT option {name!r} comes from the HydraConfig; set it there, not as a timm option")
        if name in TIMM_OPTIONS:
            continue
        if name not in defaults:
            raise UsageError(f"unknown timm VisionTransformer option {name!r}")
        if value is not defaults[name] and value != defaults[name]:
            raise UsageError(f"HydraViT cannot honour timm option {name}={value!r}: model(x, heads=k) slices the "
                             f"standard ViT block; supported timm options are {list(TIMM_OPTIONS)}")


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


def _table_for(config: HydraConfig, options: dict) -> SliceTable:
    return slicing_table(config, layer_scale=bool(options.get("init_values")), qk_norm=bool(options.get("qk_norm")))


class HydraViT(VisionTransformer):
    """A timm ViT with a head-count argument: ``model(x, heads=k)``.

    Build it from a :class:`HydraConfig`; ``model.subnet(k)`` extracts the k-head
    subnetwork as a standalone timm ``VisionTransformer``.  ``timm_kwargs`` go to timm's
    ``VisionTransformer`` (and to ``subnet(k)``); those the sliced forward cannot honour are
    refused with a :class:`UsageError` (see ``TIMM_OPTIONS``).
    """

    def __init__(self, config: HydraConfig | None = None, **timm_kwargs) -> None:
        config = config or HydraConfig()
        _check_timm_options(timm_kwargs)
        table = _table_for(config, timm_kwargs)  # refuses MLP widths that do not nest
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
                {str(k): nn.Linear(config.width(k), config.num_classes, device=timm_kwargs.get("device"),
                                   dtype=timm_kwargs.get("dtype")) for k in config.heads}
            )
            for lin in self.head_k.values():
                nn.init.trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        else:
            self.head_k = None
        self.timm_options = dict(timm_kwargs)
        #: how subnetwork k is cut from each parameter (:mod:`hydravit_edge.slicing`)
        self.slicing: SliceTable = table
        table.check_shapes({n: tuple(t.shape) for n, t in self.state_dict().items()})  # guards timm changes
        for blk in self.blocks:
            for norm in (blk.attn.q_norm, blk.attn.k_norm):
                if not isinstance(norm, (nn.Identity, nn.LayerNorm)):  # pragma: no cover - guards timm changes
                    raise UsageError(f"qk-norm layer {type(norm).__name__} is not a LayerNorm")
        self._cut_cache: dict[int, tuple[dict, dict[str, Cut]]] = {}
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
        u, c = self._cuts(k)
        e = u["e"]
        pe = self.patch_embed.proj
        x = F.conv2d(x, self._take(pe.weight, c["patch.weight"]), self._take(pe.bias, c["features"]), stride=pe.stride)
        x = x.flatten(2).transpose(1, 2)  # B, N, e
        cls = self._take(self.cls_token, c["token"]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self._take(self.pos_embed, c["pos_embed"])
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = x + blk.drop_path1(self._scale(blk.ls1, self._attention(blk.attn, self._ln(blk.norm1, x, e, c), k, c), c))
            x = x + blk.drop_path2(self._scale(blk.ls2, self._mlp(blk.mlp, self._ln(blk.norm2, x, e, c), c), c))
        return self._ln(self.norm, x, e, c)

    def forward_head_heads(self, x: torch.Tensor, k) -> torch.Tensor:
        x = x[:, 0]
        x = self.head_drop(x)
        if self.head_k is not None:
            head = self.head_k[str(int(k))]
            return head(x)
        _, c = self._cuts(k)
        return F.linear(x, self._take(self.head.weight, c["head.weight"]), self._take(self.head.bias, c["whole"]))

    # ------------------------------------------------------------------ pieces
    def _cuts(self, k) -> tuple[dict, dict[str, Cut]]:
        """The units and every slicing rule resolved for k (cached for int k; k may be symbolic)."""
        if isinstance(k, int):
            hit = self._cut_cache.get(k)
            if hit is None:
                u = units(self.config, k)
                hit = self._cut_cache[k] = (u, self.slicing.cuts(u))
            return hit
        u = units(self.config, k)
        return u, self.slicing.cuts(u)

    def _w(self, p: torch.Tensor) -> "_Slicer":
        """``self._w(p)[idx]`` is ``p[idx]``, or its leaf view inside :meth:`slice_leaves`."""
        return _Slicer(p, self._leaves)

    def _take(self, p: torch.Tensor, c: Cut) -> torch.Tensor:
        """``p`` cut by ``c``: a view (or leaf view), or its pieces concatenated (q/k/v thirds while training)."""
        return take(self._w(p), c, concat=_cat)

    def _ln(self, norm: nn.LayerNorm, x: torch.Tensor, e, c) -> torch.Tensor:
        return F.layer_norm(x, (e,), self._take(norm.weight, c["features"]), self._take(norm.bias, c["features"]), _LN_EPS)

    def _scale(self, ls: nn.Module, x: torch.Tensor, c) -> torch.Tensor:
        """LayerScale: ``x * gamma[:e]`` (identity without ``init_values``)."""
        return x if isinstance(ls, nn.Identity) else x * self._take(ls.gamma, c["features"])

    def _qk_norm(self, norm: nn.Module, t: torch.Tensor, c) -> torch.Tensor:
        """qk-norm acts per head over head_dim: its weights are used whole."""
        if isinstance(norm, nn.Identity):
            return t
        return F.layer_norm(t, norm.normalized_shape, self._take(norm.weight, c["whole"]),
                            self._take(norm.bias, c["whole"]), norm.eps)

    def _attention(self, attn: nn.Module, x: torch.Tensor, k, c) -> torch.Tensor:
        B, N, _ = x.shape
        hd = self.config.head_dim
        cw, cb = c["qkv.weight"], c["qkv.bias"]
        # the qkv cut is the q, k and v rows of the first k heads, in timm's (3, k, head_dim) layout
        if self._leaves is not None or cw.joined is not None:
            # one GEMM as in timm: at k = num_heads (one view), and in training (three narrow GEMMs cost
            # ~20% more at k=1; the weight copy is 3*e*e floats, backward splits its gradient into the views)
            qkv = F.linear(x, self._take(attn.qkv.weight, cw), self._take(attn.qkv.bias, cb))
            q, kk, v = qkv.view(B, N, 3, k, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            w, b = self._w(attn.qkv.weight), self._w(attn.qkv.bias)
            q, kk, v = (F.linear(x, w[iw], b[ib]).view(B, N, k, hd).transpose(1, 2)
                        for iw, ib in zip(cw.pieces, cb.pieces, strict=True))
        q, kk = self._qk_norm(attn.q_norm, q, c), self._qk_norm(attn.k_norm, kk, c)
        dropout_p = attn.attn_drop.p if self.training else 0.0
        o = F.scaled_dot_product_attention(q, kk, v, dropout_p=dropout_p)
        o = o.transpose(1, 2).reshape(B, N, k * hd)
        o = F.linear(o, self._take(attn.proj.weight, c["proj.weight"]), self._take(attn.proj.bias, c["features"]))
        return attn.proj_drop(o)

    def _mlp(self, mlp: nn.Module, x: torch.Tensor, c) -> torch.Tensor:
        x = F.linear(x, self._take(mlp.fc1.weight, c["fc1.weight"]), self._take(mlp.fc1.bias, c["fc1.bias"]))
        x = mlp.act(x)
        x = mlp.drop1(x)
        x = F.linear(x, self._take(mlp.fc2.weight, c["fc2.weight"]), self._take(mlp.fc2.bias, c["features"]))
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
        """The k-head subnetwork's weights under timm ViT keys (copies, contiguous), cut by the slicing table."""
        k = self.config.check_heads(k)
        _, c = self._cuts(k)
        sd = self.state_dict()
        return {key: take(sd[name], c[self.slicing.params[name].rule], concat=_cat).clone().contiguous()
                for key, name in self.slicing.subnet_params(k).items()}

    def subnet(self, k: int) -> VisionTransformer:
        """The k-head subnetwork as a standalone timm ``VisionTransformer`` (embed head_dim*k, k heads)."""
        k = self.config.check_heads(k)
        vit = build_timm_vit(self.config, k, **self.timm_options)
        vit.load_state_dict(self.subnet_state_dict(k), strict=True)
        return vit.train(self.training)

    @torch.no_grad()
    def narrow(self, kmax: int) -> "HydraViT":
        """The HydraViT made of the first ``kmax`` heads (a copy, in eval mode).

        ``m.narrow(kmax).forward_heads(x, k) == m.forward_heads(x, k)`` for every k <= kmax, so a
        single artifact for heads up to kmax stores only the weights those heads use.  Every
        parameter is its slicing-table cut at kmax (separate classifiers of k <= kmax whole).
        Returns the model itself when kmax is already its head count.
        """
        cfg = self.config
        kmax = cfg.check_heads(kmax)
        if kmax == cfg.num_heads:
            return self
        heads = tuple(k for k in cfg.heads if k <= kmax) or (kmax,)
        small = HydraViT(cfg.replace(num_heads=kmax, heads=heads, drop_path_rate=0.0), **self.timm_options)
        _, c = self._cuts(kmax)
        full = self.state_dict()
        sd = {name: take(full[name], c[self.slicing.params[name].rule], concat=_cat).clone().contiguous()
              for name in small.state_dict()}
        small.load_state_dict(sd, strict=True)
        return small.eval()

    def extra_repr(self) -> str:
        c = self.config
        return f"heads={list(c.heads)}, head_dim={c.head_dim}, separate_heads={c.separate_heads}"


def _cat(parts, axis: int) -> torch.Tensor:
    return torch.cat(parts, dim=axis)


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

