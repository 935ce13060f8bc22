"""Reading and writing HydraViT checkpoints.

:func:`load_checkpoint` recognises, without being told, three formats:

* the official HydraViT release (``torch.save`` of a dict with ``state_dict``,
  ``state_dict_ema``, ``args`` as an ``argparse.Namespace``, ``epoch``, ``optimizer``,
  ``metric``), read with ``weights_only=True`` and an explicit allow-list;
* any timm ViT/DeiT checkpoint, a raw state dict or wrapped (``model``, ``state_dict``,
  ``module.`` prefixes); a narrower one (e.g. DeiT-tiny) is copied into the leading corner
  of every tensor of a wider model, as the paper initialises HydraViT;
* this project's own format: safetensors with the config in its metadata
  (:func:`save_checkpoint`); EMA weights, when saved, live under ``ema.`` keys.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import HydraConfig
from .errors import CheckpointError, UsageError, not_found
from .fileio import atomic_write
from .model import HydraViT

FORMAT_NAME = "hydravit-edge"
#: The checkpoints of a training run directory, in the order a run directory stands for them.
RUN_CHECKPOINTS = ("best.safetensors", "last.safetensors")
FORMAT_VERSION = "1"
EMA_PREFIX = "ema."

#: Objects an official HydraViT / timm training checkpoint may contain besides tensors and
#: builtin containers.  Nothing else is ever unpickled.
SAFE_GLOBALS: list[Any] = [argparse.Namespace]

_WRAPPER_KEYS = ("state_dict", "model", "module", "net")
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema")
_STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class CheckpointContents:
    """What a checkpoint file holds, before it is fitted to a model."""

    path: Path
    format: str  # "safetensors" | "official" | "timm"
    state_dict: dict[str, torch.Tensor]
    config: HydraConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    used_ema: bool = False


@dataclass(frozen=True)
class Architecture:
    """Architecture facts read off a ViT state dict."""

    width: int
    depth: int
    patch_size: int
    in_chans: int
    num_tokens: int
    num_classes: int
    mlp_hidden: int
    separate_heads: tuple[int, ...] = ()

    @property
    def img_size(self) -> int:
        side = round((self.num_tokens - 1) ** 0.5)
        return side * self.patch_size


# --------------------------------------------------------------------------- reading

def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: a training run directory stands for its
    ``best.safetensors``, else its ``last.safetensors``; any other path is returned as given.

    A directory holding neither is a :class:`UsageError` (what ``eval RUN_DIR``,
    ``export --checkpoint RUN_DIR`` and ``info --checkpoint RUN_DIR`` report).
    """
    path = Path(path)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise UsageError(f"{path}: a directory without {' or '.join(RUN_CHECKPOINTS)}")
    return path


def _sniff(path: Path) -> str:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-pickle"
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n + 8 > size:
            raise CheckpointError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size})")
        return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint this toolkit reads (expected safetensors, or a torch.save file "
        "of an official HydraViT / timm ViT checkpoint)"
    )


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = re.search(r"(?:Unsupported global|GLOBAL) ?:? ?(?:GLOBAL )?([\w.]+)", msg)
        what = f" ({m.group(1)})" if m else ""
        if "Unsupported" in msg or "global" in msg.lower():
            raise CheckpointError(
                f"{path}: contains a pickled object outside the allow-list{what}; refusing to unpickle it. "
                "Only tensors, builtin containers and argparse.Namespace are loaded."
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint ({msg.splitlines()[0]})") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({first})") from None


def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for p in _STRIP_PREFIXES:
            if all(k.startswith(p) for k in out):
                out = {k[len(p):]: v for k, v in out.items()}
                changed = True
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_checkpoint(path: str | os.PathLike, prefer_ema: bool = True) -> CheckpointContents:
    """Read a checkpoint file of any supported format into a :class:`CheckpointContents`."""
    path = Path(path)
    if not path.exists():
        raise not_found(CheckpointError, f"{path}: no such checkpoint file")
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path, prefer_ema)
    obj = _torch_load(path)
    meta: dict[str, Any] = {}
    if _is_state_dict(obj):
        return CheckpointContents(path, "timm", _strip_prefix(obj))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    if "sampler" in obj and "optimizer" in obj and "rng" in obj:
        raise CheckpointError(
            f"{path}: is a training state file (what `train --resume` reads), not a model checkpoint; "
            f"use {path.with_name('best.safetensors')} or the run directory"
        )
    fmt = "official" if "args" in obj or "state_dict_ema" in obj else "timm"
    if isinstance(obj.get("args"), argparse.Namespace):
        meta["args"] = vars(obj["args"])
    for key in ("epoch", "metric", "arch"):
        if key in obj:
            meta[key] = obj[key]
    used_ema = False
    sd = None
    if prefer_ema:
        for key in _EMA_KEYS:
            if _is_state_dict(obj.get(key)):
                sd, used_ema = obj[key], True
                break
    if sd is None:
        for key in _WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                sd = obj[key]
                break
    if sd is None:
        raise CheckpointError(
            f"{path}: no model weights found; expected a state dict or a dict with one of "
            f"{list(_EMA_KEYS + _WRAPPER_KEYS)} (found keys {sorted(map(str, obj))[:8]})"
        )
    return CheckpointContents(path, fmt, _strip_prefix(sd), None, meta, used_ema)


def _read_safetensors(path: Path, prefer_ema: bool) -> CheckpointContents:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
    config = None
    if "config" in meta:
        try:
            config = HydraConfig.from_json(meta["config"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable config in metadata ({exc})") from None
    extra = {}
    for key, value in meta.items():
        if key in ("config", "format", "format_version"):
            continue
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    plain = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    used_ema = bool(prefer_ema and ema)
    fmt = "safetensors" if meta.get("format") == FORMAT_NAME else "timm"
    return CheckpointContents(path, fmt, _strip_prefix(ema if used_ema else plain), config, extra, used_ema)


# --------------------------------------------------------------------------- fitting

def architecture(sd: Mapping[str, torch.Tensor], path: Path | str = "<state dict>") -> Architecture:
    """Read width, depth, patch size, tokens and classes off a timm ViT state dict."""
    need = ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a ViT checkpoint, missing keys {missing}")
    pw = sd["patch_embed.proj.weight"]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    if "head.weight" in sd:
        classes = sd["head.weight"].shape[0]
    else:
        heads = [v for k, v in sd.items() if re.match(r"head_k\.\d+\.weight$", k)]
        classes = heads[0].shape[0] if heads else 0
    sep = tuple(sorted(int(m.group(1)) for k in sd if (m := re.match(r"head_k\.(\d+)\.weight$", k))))
    return Architecture(
        width=pw.shape[0], depth=depth, patch_size=pw.shape[-1], in_chans=pw.shape[1],
        num_tokens=sd["pos_embed"].shape[1], num_classes=classes,
        mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0], separate_heads=sep,
    )


def infer_config(contents: CheckpointContents, head_dim: int = 64) -> HydraConfig:
    """A :class:`HydraConfig` for a checkpoint that does not store one."""
    if contents.config is not None:
        return contents.config
    arch = architecture(contents.state_dict, contents.path)
    args = contents.metadata.get("args") or {}
    if arch.width % head_dim:
        raise CheckpointError(
            f"{contents.path}: width {arch.width} is not a multiple of the {head_dim}-dim heads; pass a config"
        )
    heads = args.get("heads") if isinstance(args.get("heads"), (list, tuple)) else None
    num_heads = arch.width // head_dim
    if heads is not None and not all(isinstance(k, int) and 1 <= k <= num_heads for k in heads):
        heads = None
    if arch.separate_heads:
        heads = arch.separate_heads
    return HydraConfig(
        img_size=arch.img_size, patch_size=arch.patch_size, in_chans=arch.in_chans, depth=arch.depth,
        num_heads=num_heads, head_dim=head_dim, mlp_ratio=arch.mlp_hidden / arch.width,
        num_classes=arch.num_classes, heads=tuple(heads) if heads else None,
        separate_heads=bool(arch.separate_heads),
    )


def _check_compatible(arch: Architecture, config: HydraConfig, path: Path) -> None:
    problems = []
    if arch.depth != config.depth:
        problems.append(f"depth {arch.depth} != {config.depth}")
    if arch.patch_size != config.patch_size:
        problems.append(f"patch size {arch.patch_size} != {config.patch_size}")
    if arch.in_chans != config.in_chans:
        problems.append(f"input channels {arch.in_chans} != {config.in_chans}")
    if arch.num_tokens != config.num_tokens:
        problems.append(f"{arch.num_tokens} position embeddings != {config.num_tokens} tokens "
                        f"({config.img_size}px / patch {config.patch_size} + cls)")
    if arch.num_classes != config.num_classes:
        problems.append(f"{arch.num_classes} classes != {config.num_classes}")
    if arch.width > config.embed_dim:
        problems.append(f"width {arch.width} is wider than the model's {config.embed_dim}")
    elif arch.width % config.head_dim:
        problems.append(f"width {arch.width} is not a whole number of {config.head_dim}-dim heads")
    elif arch.mlp_hidden != config.mlp_hidden(arch.width // config.head_dim):
        # the narrower timm ViT of width e has int(e * mlp_ratio) MLP units (HydraConfig.mlp_hidden)
        problems.append(f"MLP width {arch.mlp_hidden} != {config.mlp_hidden(arch.width // config.head_dim)} "
                        f"(mlp_ratio {config.mlp_ratio:g} at width {arch.width}; the checkpoint's ratio is "
                        f"{arch.mlp_hidden / arch.width:g})")
    if problems:
        raise CheckpointError(f"{path}: architecture does not match the model: " + "; ".join(problems))


def load_state_into(model: HydraViT, contents: CheckpointContents) -> HydraViT:
    """Copy a checkpoint's weights into ``model`` (full width, or into the leading corner)."""
    config = model.config
    sd = dict(contents.state_dict)
    path = contents.path
    arch = architecture(sd, path)
    _check_compatible(arch, config, path)
    target = model.state_dict()
    if not config.separate_heads:
        stray = [k for k in sd if k.startswith("head_k.")]
        if stray:
            raise CheckpointError(f"{path}: has separate classifiers per k ({stray[0]}, ...) but the model "
                                  "has one shared classifier; use a config with separate_heads=True")
    expected = {k for k in target if not k.startswith("head_k.")}
    if config.separate_heads and arch.separate_heads:
        expected |= {k for k in target if k.startswith("head_k.")}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - set(target))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        raise CheckpointError(f"{path}: " + "; ".join(parts))
    k_src = arch.width // config.head_dim
    cuts = model.slicing.cuts(model.slicing.widths(k_src))  # the checkpoint is subnetwork k_src's cut
    with torch.no_grad():
        for name, src in sd.items():
            dst = target[name]
            c = cuts[model.slicing.params[name].rule]
            want = c.shape(dst.shape)
            if tuple(src.shape) != want:
                raise CheckpointError(f"{path}: {name} has shape {tuple(src.shape)}, expected {want} "
                                      f"for a {k_src}-head checkpoint")
            offset = 0
            for idx in c.pieces:  # e.g. the q, k, v thirds land at row offsets 0, D, 2D
                n = idx[c.axis].stop - idx[c.axis].start if c.axis is not None else None
                dst[idx].copy_(src if n is None else src.narrow(c.axis, offset, n))
                offset += n or 0
        if config.separate_heads and not arch.separate_heads and "head.weight" in sd:
            # a shared classifier initialises the separate classifier of the checkpoint's own k
            if str(k_src) in model.head_k:
                model.head_k[str(k_src)].weight.copy_(sd["head.weight"])
                model.head_k[str(k_src)].bias.copy_(sd["head.bias"])
    model.load_state_dict(target, strict=True)
    return model


def load_checkpoint(path: str | os.PathLike, config: HydraConfig | None = None, *,
                    prefer_ema: bool = True) -> HydraViT:
    """Build a :class:`HydraViT` from a checkpoint of any supported format.

    ``config`` defaults to the one stored in the file (project format) or one inferred from
    the weights (64-dim heads).  A checkpoint narrower than ``config`` is copied into the
    leading corner of every tensor, so its own head count reproduces the original model.
    Raises :class:`CheckpointError` naming the file and the problem.
    """
    contents = read_checkpoint(path, prefer_ema=prefer_ema)
    if config is None:
        config = infer_config(contents)
    model = HydraViT(config)
    load_state_into(model, contents)
    return model.eval()


# --------------------------------------------------------------------------- writing

def save_checkpoint(model: HydraViT, path: str | os.PathLike, *, ema: HydraViT | Mapping[str, torch.Tensor] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` (and optional EMA weights) as safetensors with the config in its metadata.

    The write is atomic: a temporary file in the same directory, then a rename.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ema is not None:
        ema_sd = ema.state_dict() if isinstance(ema, torch.nn.Module) else ema
        tensors.update({EMA_PREFIX + k: v.detach().contiguous().cpu() for k, v in ema_sd.items()})
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    # tensors sharing storage (tied weights) must be cloned for safetensors
    seen: dict[int, str] = {}
    for k, v in list(tensors.items()):
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            tensors[k] = v.clone()
        seen[ptr] = k
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
