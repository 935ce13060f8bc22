"""The slicing table (hydravit_edge/slicing.py): its JSON form and schema, and its cuts against
independent timm ViTs of width head_dim*k for every k and several configs."""

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
import torch

from hydravit_edge import HydraConfig, HydraViT, UsageError
from hydravit_edge.model import build_timm_vit
from hydravit_edge.slicing import SCHEMA_PATH, SliceTable, cut, render_schema, schema, slicing_table
from helpers import TINY, images

CONFIGS = {
    "tiny": TINY,
    "separate": TINY.replace(separate_heads=True, heads=(1, 3, 4)),
    "hd16-r2.7": HydraConfig(img_size=16, patch_size=8, depth=2, num_heads=5, head_dim=16, mlp_ratio=2.7, num_classes=3),
    "hd24-r3.3": HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=4, head_dim=24, mlp_ratio=3.3, num_classes=3,
                             separate_heads=True),
}
OPTIONS = {"plain": {}, "layerscale+qknorm": {"init_values": 0.5, "qk_norm": True}}


def _randomised(vit: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return vit.eval()


def _embed_by_hand(cfg: HydraConfig, k: int, narrow: dict, full: dict) -> dict:
    """Put a k-head timm ViT's weights into the full state dict by timm's layout, written out
    independently of the slicing table: q, k, v row blocks at offsets 0, D, 2D; everything else
    in the leading corner; the classifier into head_k.<k> for separate heads."""
    D, e = cfg.embed_dim, cfg.width(k)
    out = {n: t.clone() for n, t in full.items()}
    for name, src in narrow.items():
        if cfg.separate_heads and name.startswith("head."):
            out[f"head_k.{k}.{name.split('.')[1]}"] = src.clone()
            continue
        dst = out[name]
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            for i in range(3):
                dst[i * D:i * D + e, ...][(slice(None),) + tuple(slice(0, n) for n in src.shape[1:])] = src[i * e:(i + 1) * e]
        else:
            dst[tuple(slice(0, n) for n in src.shape)] = src
    return out


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("name", CONFIGS)
def test_table_cuts_every_k_out_of_an_independently_embedded_timm_vit(name, opts):
    """Subnetwork k placed by hand into the full weights: the table's cut (torch-free, from its JSON)
    gives back exactly its state dict, and model(x, heads=k) its logits."""
    cfg, kw = CONFIGS[name], OPTIONS[opts]
    model = _randomised(HydraViT(cfg, **kw), 0)
    table_json = json.loads(model.slicing.to_json())
    x = images(cfg)
    for k in cfg.heads:
        narrow = _randomised(build_timm_vit(cfg, k, **kw), k)
        assert narrow.blocks[0].mlp.fc1.out_features == int(cfg.head_dim * k * cfg.mlp_ratio)  # timm's own width
        sd = _embed_by_hand(cfg, k, narrow.state_dict(), model.state_dict())
        model.load_state_dict(sd, strict=True)
        got = cut(table_json, {n: t.numpy() for n, t in sd.items()}, k)
        want = narrow.state_dict()
        assert list(got) == list(model.subnet_state_dict(k)) and set(got) == set(want)
        for key, t in want.items():
            assert np.array_equal(got[key], t.numpy()), (name, k, key)
        with torch.no_grad():
            torch.testing.assert_close(model(x, heads=k), narrow(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("name", CONFIGS)
def test_table_lists_every_parameter_with_its_shape(name, opts):
    model = HydraViT(CONFIGS[name], **OPTIONS[opts])
    table = model.slicing
    assert {n: tuple(p.shape) for n, p in table.params.items()} == {n: tuple(t.shape) for n, t in model.state_dict().items()}
    assert list(table.params) == list(model.state_dict())
    with pytest.raises(RuntimeError, match="does not describe"):
        table.check_shapes({**{n: t.shape for n, t in model.state_dict().items()}, "extra.weight": (1,)})


def test_explicit_ranges_for_the_tiny_config():
    """The resolved cuts, spelled out: D=32, 8-dim heads, k=2 (e=16, h=64)."""
    t = slicing_table(TINY)
    assert t.cut_of("blocks.0.attn.qkv.weight", 2).ranges == (((0, 16), (32, 48), (64, 80)), ((0, 16),))
    assert t.cut_of("blocks.0.attn.qkv.bias", 2).ranges == (((0, 16), (32, 48), (64, 80)),)
    assert t.cut_of("blocks.1.mlp.fc1.weight", 2).ranges == (((0, 64),), ((0, 16),))
    assert t.cut_of("blocks.1.mlp.fc2.weight", 2).ranges == (((0, 16),), ((0, 64),))
    assert t.cut_of("pos_embed", 2).ranges == (((0, 1),), ((0, 17),), ((0, 16),))
    assert t.cut_of("head.weight", 2).ranges == (((0, 5),), ((0, 16),))
    assert t.cut_of("head.bias", 2).ranges is None
    assert t.cut_of("blocks.0.attn.qkv.weight", 4).joined == (slice(0, 96), slice(0, 32))  # k=H: one view
    assert t.units == {"e": [8, 16, 24, 32], "h": [32, 64, 96, 128]}


def test_mlp_widths_are_timms_and_nest():
    t = slicing_table(CONFIGS["hd24-r3.3"])
    assert t.units["h"] == [79, 158, 237, 316]  # int(24 k * 3.3); int(3.3 * 24) * k would give 79k
    with pytest.raises(UsageError, match="MLP widths"):
        slicing_table(TINY.replace(mlp_ratio=0.1))  # int(8 * 0.1) = 0 units at k=1
    with pytest.raises(UsageError, match="MLP widths"):
        HydraViT(TINY.replace(mlp_ratio=0.1))


def test_separate_classifiers_map_to_the_subnet_head():
    t = slicing_table(CONFIGS["separate"])
    assert t.subnet_params(3)["head.weight"] == "head_k.3.weight" and t.subnet_params(3)["head.bias"] == "head_k.3.bias"
    assert "head_k.1.weight" not in t.subnet_params(3).values() and "head.weight" not in t.subnet_params(3).values()
    assert t.params["head_k.3.weight"].shape == [5, 24] and t.rules[t.params["head_k.3.weight"].rule].axes is None
    assert t.heads == [1, 3, 4] and slicing_table(TINY).heads == [1, 2, 3, 4]
    full = {n: np.zeros(p.shape, np.float32) for n, p in t.params.items()}
    with pytest.raises(UsageError, match="heads=2 cannot be cut"):
        cut(t.to_dict(), full, 2)  # no classifier of k=2


def test_json_roundtrip_and_validation():
    t = slicing_table(CONFIGS["separate"], layer_scale=True, qk_norm=True)
    d = json.loads(t.to_json())
    assert SliceTable.from_dict(d) == t
    bad = json.loads(t.to_json())
    bad["params"]["blocks.0.attn.qkv.weight"]["rule"] = "nope"
    with pytest.raises(ValueError, match="rule 'nope'"):
        SliceTable.from_dict(bad)
    bad = json.loads(t.to_json())
    bad["rules"]["fc1.weight"]["axes"][0][0]["start"] = 1  # runs past the fc1 rows at k = num_heads
    with pytest.raises(ValueError, match="leave its axis"):
        SliceTable.from_dict(bad)
    bad = json.loads(t.to_json())
    bad["units"]["h"] = bad["units"]["h"][:-1]
    with pytest.raises(ValueError, match="entries"):
        SliceTable.from_dict(bad)


def test_committed_schema_file_is_the_generated_one():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), "run `python -m hydravit_edge.slicing`"


def test_schema_accepts_tables_and_rejects_what_the_model_rejects():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    jsonschema.Draft202012Validator.check_schema(schema())
    d = slicing_table(CONFIGS["separate"], layer_scale=True).to_dict()
    validator.validate(d)
    for path, value in ((("rules", "token", "axes", 0, 0, "start"), -1), (("params", "cls_token", "rule"), 3),
                        (("format",), "other")):
        bad = json.loads(json.dumps(d))
        node = bad
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        assert not validator.is_valid(bad), path
        with pytest.raises(ValueError):
            SliceTable.from_dict(bad)


_TORCH_FREE = r"""
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
from hydravit_edge.slicing import cut
table = json.load(open(sys.argv[1]))
full = dict(np.load(sys.argv[2]))
out = {f"{k}/{key}": a for k in map(int, sys.argv[4:]) for key, a in cut(table, full, k).items()}
np.savez(sys.argv[3], **out)
print("torch" in sys.modules and sys.modules["torch"] is not None)
"""


def test_torch_free_cut_from_json_equals_subnet_state_dict(tmp_path):
    cfg = CONFIGS["hd24-r3.3"]
    model = _randomised(HydraViT(cfg, init_values=0.5), 3)
    (tmp_path / "table.json").write_text(model.slicing.to_json())
    np.savez(tmp_path / "full.npz", **{n: t.numpy() for n, t in model.state_dict().items()})
    ks = [str(k) for k in cfg.heads]
    res = subprocess.run([sys.executable, "-c", _TORCH_FREE, str(tmp_path / "table.json"), str(tmp_path / "full.npz"),
                          str(tmp_path / "out.npz"), *ks], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    got = dict(np.load(tmp_path / "out.npz"))
    for k in cfg.heads:
        want = model.subnet_state_dict(k)
        assert {key.split("/", 1)[1] for key in got if key.startswith(f"{k}/")} == set(want)
        for key, t in want.items():
            assert np.array_equal(got[f"{k}/{key}"], t.numpy()), (k, key)
