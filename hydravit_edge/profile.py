"""Analytic cost of every subnetwork: parameters, MACs, the paper's RAM figure, weight bytes.

The numbers follow the paper's conventions (its Table 4):

* **MACs** at batch 1, counting the patch-embedding convolution, every linear layer and
  both attention matmuls (QK^T and AV); normalisation, softmax and GELU are not counted.
* **RAM** as torchinfo's "Estimated Total Size" at batch 1 in fp32, which the official
  ``validate_memory.py`` reports: input bytes + 2 x the outputs of every leaf module that runs
  + parameter bytes.  The leaf modules are those of timm's ``VisionTransformer`` (the
  subnetwork as ``model.subnet(k)`` builds it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from .config import HydraConfig

MB = 1e6  # torchinfo reports decimal megabytes


@dataclass(frozen=True)
class KProfile:
    k: int
    embed_dim: int
    params: int
    macs: int
    ram_mb: float
    fp32_bytes: int
    fp16_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def params_for(config: HydraConfig, k: int) -> int:
    e, h, c = config.width(k), config.mlp_hidden(k), config.num_classes
    p = config.patch_size
    n = config.num_tokens
    patch = e * config.in_chans * p * p + e
    embed = e + n * e  # cls token + position embedding
    block = (
        2 * e  # norm1
        + 3 * e * e + 3 * e  # qkv
        + e * e + e  # proj
        + 2 * e  # norm2
        + h * e + h  # fc1
        + e * h + e  # fc2
    )
    head = e * c + c
    return patch + embed + config.depth * block + 2 * e + head


def macs_for(config: HydraConfig, k: int) -> int:
    e, h, c = config.width(k), config.mlp_hidden(k), config.num_classes
    n, p = config.num_tokens, config.patch_size
    patch = config.num_patches * e * config.in_chans * p * p
    block = n * 3 * e * e + n * n * e + n * n * e + n * e * e + n * h * e + n * e * h
    return patch + config.depth * block + e * c


def _leaf_output_elements(config: HydraConfig, k: int) -> int:
    """Output elements of the leaf modules with parameters (torchinfo counts only those)."""
    e, h, c = config.width(k), config.mlp_hidden(k), config.num_classes
    n = config.num_tokens
    per_block = n * e * (1 + 3 + 1 + 1 + 1) + n * h  # norm1, qkv, proj, norm2, fc2; fc1
    return config.num_patches * e + config.depth * per_block + n * e + c  # conv, blocks, norm, head


def ram_mb_for(config: HydraConfig, k: int) -> float:
    """torchinfo's "Estimated Total Size (MB)" at batch 1, fp32 (the paper's RAM column).

    torchinfo adds the input bytes, twice the output bytes of every leaf module that has
    parameters ("x2 for gradients") and the parameter bytes of leaf modules (which leaves
    out the cls token and position embedding, owned by the ViT itself).
    """
    input_bytes = config.in_chans * config.img_size * config.img_size * 4
    fwd_bwd = 2 * _leaf_output_elements(config, k) * 4
    e = config.width(k)
    leaf_params = params_for(config, k) - e - config.num_tokens * e
    return (input_bytes + fwd_bwd + leaf_params * 4) / MB


def profile(config: HydraConfig, heads: Iterable[int] | None = None) -> list[KProfile]:
    """Per-k cost rows for ``heads`` (default: every k the model offers)."""
    ks = list(config.heads if heads is None else heads)
    rows = []
    for k in ks:
        config.check_heads(k)
        params = params_for(config, k)
        rows.append(KProfile(
            k=k, embed_dim=config.width(k), params=params, macs=macs_for(config, k),
            ram_mb=round(ram_mb_for(config, k), 2), fp32_bytes=4 * params, fp16_bytes=2 * params,
        ))
    return rows
