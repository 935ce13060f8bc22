"""Small shared helpers for the core tests (tiny configs, deterministic weights)."""

from __future__ import annotations

import torch

from hydravit_edge import HydraConfig, HydraViT

#: A tiny 4-head model: 32px images, patch 8 (17 tokens), depth 2, 8-dim heads, 5 classes.
TINY = HydraConfig(img_size=32, patch_size=8, depth=2, num_heads=4, head_dim=8, num_classes=5)


def tiny_model(config: HydraConfig = TINY, seed: int = 0) -> HydraViT:
    torch.manual_seed(seed)
    model = HydraViT(config).eval()
    # give LayerNorms and biases non-trivial values so slicing mistakes show up
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or name in ("cls_token", "pos_embed"):
                p.normal_(0.0, 0.5)
                if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                    p.add_(1.0)
    return model


def images(config: HydraConfig = TINY, n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.in_chans, config.img_size, config.img_size, generator=g)


def refresh_manifest_hashes(export_dir, key: str, path) -> None:
    """After a test damaged ``path`` on purpose: put its new size and sha256 in the manifest entry
    ``key``, so that only the checks that run the artifact can catch the damage."""
    import json
    from pathlib import Path

    from hydravit_edge.export.hashing import path_sha256

    path = Path(path)
    man_path = Path(export_dir) / "manifest.json"
    man = json.loads(man_path.read_text())
    rel = path.relative_to(export_dir).as_posix()
    files = [f for f in man["targets"][key]["files"] if f["path"] == rel]
    assert files, f"{rel} is not a file of {key}"
    for f in files:
        f["bytes"], f["sha256"] = path.stat().st_size, path_sha256(path)
    man_path.write_text(json.dumps(man))


def spoil_scales(raw: bytearray, weights) -> int:
    """Multiply by 8, in ``raw`` (an artifact's bytes), the float32 per-output-channel int8 scales
    (:func:`hydravit_edge.precision.quantize_rows`) of each of ``weights`` found there; returns how many."""
    import numpy as np

    from hydravit_edge.precision import quantize_rows

    hit = 0
    for w in weights:
        s = quantize_rows(w)[1]
        at = bytes(raw).find(s.tobytes())
        if at >= 0:
            raw[at:at + s.nbytes] = (s * 8).astype(np.float32).tobytes()
            hit += 1
    return hit


def assert_spoiled_scales_fail_validation(src, tmp_path, key: str, rel: str, k: int, weights, min_hits: int) -> None:
    """Copy the export ``src``, multiply by 8 the int8 scales of ``weights`` in its file ``rel``
    (:func:`spoil_scales`, at least ``min_hits`` found), fix up the manifest's size and sha256, and
    assert that ``validate`` fails the runtime check of k (and still passes the original)."""
    import shutil
    from pathlib import Path

    from hydravit_edge.export.validation import validate_dir

    d = Path(tmp_path) / "broken"
    shutil.copytree(src, d)
    path = d / rel
    raw = bytearray(path.read_bytes())
    assert spoil_scales(raw, weights) >= min_hits
    path.write_bytes(bytes(raw))
    refresh_manifest_hashes(d, key, path)
    runtime = [r for r in validate_dir(d, [key]).results if r.check == "runtime"]
    assert [(r.k, r.status.value) for r in runtime] == [(k, "failed")]
    assert "max abs error" in runtime[0].reason
    assert validate_dir(src, [key]).passed
