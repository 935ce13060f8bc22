import argparse
import pathlib

import pytest
import torch

from hydravit_edge import CheckpointError, HydraViT, load_checkpoint, read_checkpoint, save_checkpoint
from hydravit_edge.model import build_timm_vit
from helpers import TINY, images, tiny_model


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)


def test_project_format_roundtrip_with_config_and_ema(tmp_path):
    model = tiny_model(TINY.replace(labels=tuple("abcde")))
    ema = tiny_model(TINY.replace(labels=tuple("abcde")), seed=5)
    path = save_checkpoint(model, tmp_path / "m.safetensors", ema=ema, metadata={"epoch": 3, "note": "x"})
    loaded = load_checkpoint(path)  # EMA preferred
    assert loaded.config == model.config and loaded.config.labels == tuple("abcde")
    _same_weights(loaded, ema)
    _same_weights(load_checkpoint(path, prefer_ema=False), model)
    contents = read_checkpoint(path)
    assert contents.format == "safetensors" and contents.metadata["epoch"] == 3 and contents.used_ema
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_official_release_format(tmp_path):
    """torch.save'd dict with state_dict, state_dict_ema, args Namespace, epoch, optimizer, metric; module. prefix."""
    cfg = TINY
    model, ema = tiny_model(cfg), tiny_model(cfg, seed=3)
    args = argparse.Namespace(model="hydravit_dyn_patch16_224", heads=[1, 2, 3, 4], lr=5e-4, weights=None)
    ckpt = {
        "epoch": 299, "arch": "hydravit_dyn_patch16_224",
        "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
        "state_dict_ema": {"module." + k: v for k, v in ema.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "args": args, "metric": 81.1, "version": 2,
    }
    path = tmp_path / "model_best.pth.tar"
    torch.save(ckpt, path)
    loaded = load_checkpoint(path, cfg)
    _same_weights(loaded, ema)
    _same_weights(load_checkpoint(path, cfg, prefer_ema=False), model)
    contents = read_checkpoint(path)
    assert contents.format == "official" and contents.metadata["args"]["heads"] == [1, 2, 3, 4]
    # the config can be inferred for 64-dim heads; for this tiny model give head_dim explicitly
    with pytest.raises(CheckpointError, match="not a multiple of the 64-dim heads"):
        load_checkpoint(path)


def test_official_format_refuses_non_allowlisted_objects(tmp_path):
    model = tiny_model()
    ckpt = {"state_dict": model.state_dict(), "args": argparse.Namespace(output=pathlib.PurePosixPath("/x"))}
    path = tmp_path / "evil.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="allow-list"):
        load_checkpoint(path, TINY)


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict"])
def test_timm_checkpoint_same_width(tmp_path, wrap):
    torch.manual_seed(0)
    vit = build_timm_vit(TINY)
    sd = vit.state_dict()
    obj = sd if wrap == "raw" else {wrap: sd, "epoch": 1}
    path = tmp_path / "vit.pth"
    torch.save(obj, path)
    model = load_checkpoint(path, TINY)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x, heads=TINY.num_heads), vit.eval()(x), atol=1e-5, rtol=0)


def test_narrower_checkpoint_goes_into_the_corner(tmp_path):
    """A 2-head timm ViT copied into the 4-head model: subnetwork k=2 reproduces it exactly."""
    torch.manual_seed(0)
    narrow = build_timm_vit(TINY, 2).eval()
    with torch.no_grad():
        for p in narrow.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    path = tmp_path / "deit_tiny_like.pth"
    torch.save({"model": narrow.state_dict()}, path)
    model = load_checkpoint(path, TINY)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x, heads=2), narrow(x), atol=1e-5, rtol=0)
        # q, k and v of the narrow model sit at row offsets 0, D, 2D
        e, full = TINY.width(2), TINY.embed_dim
        w_src = narrow.blocks[0].attn.qkv.weight
        w_dst = model.blocks[0].attn.qkv.weight
        for i in range(3):
            torch.testing.assert_close(w_dst[i * full:i * full + e, :e], w_src[i * e:(i + 1) * e])
    # the rest keeps its initialisation: the wider subnetworks still run and differ
    assert model(x, heads=4).shape == (3, TINY.num_classes)


def test_wider_checkpoint_is_rejected(tmp_path):
    wide = build_timm_vit(TINY.replace(num_heads=6))
    path = tmp_path / "wide.pth"
    torch.save(wide.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wide.pth.*wider than the model"):
        load_checkpoint(path, TINY)


@pytest.mark.parametrize("change,match", [
    ({"depth": 3}, "depth 3 != 2"),
    ({"patch_size": 4}, "patch size 4 != 8"),
    ({"num_classes": 7}, "7 classes != 5"),
])
def test_mismatched_architecture(tmp_path, change, match):
    other = build_timm_vit(TINY.replace(**change))
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=match) as exc:
        load_checkpoint(path, TINY)
    assert "other.pth" in str(exc.value)


def test_missing_keys(tmp_path):
    sd = tiny_model().state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"partial.pth: missing keys \['blocks.1.mlp.fc2.bias'\]"):
        load_checkpoint(path, TINY)


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(junk)

    good = save_checkpoint(tiny_model(), tmp_path / "good.safetensors")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        load_checkpoint(trunc)

    pth = tmp_path / "full.pth"
    torch.save(tiny_model().state_dict(), pth)
    data = pth.read_bytes()
    tpth = tmp_path / "trunc.pth"
    tpth.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth: truncated or corrupt"):
        load_checkpoint(tpth, TINY)


def test_distilled_or_foreign_keys_rejected(tmp_path):
    sd = tiny_model().state_dict()
    sd["dist_token"] = torch.zeros(1, 1, TINY.embed_dim)
    path = tmp_path / "distilled.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_checkpoint(path, TINY)


def test_separate_heads_roundtrip(tmp_path):
    cfg = TINY.replace(separate_heads=True, heads=(2, 4))
    model = tiny_model(cfg)
    path = save_checkpoint(model, tmp_path / "sep.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config.separate_heads
    _same_weights(loaded, model)
    with pytest.raises(CheckpointError, match="separate classifiers"):
        load_checkpoint(path, TINY)


def test_default_config_is_inferred_for_deit_shapes(tmp_path):
    """A DeiT-tiny-shaped timm checkpoint (192 wide) becomes a 3-head, 64-dim-head HydraViT."""
    from hydravit_edge import HydraConfig

    cfg = HydraConfig(img_size=32, patch_size=16, depth=1, num_heads=3, num_classes=4)
    vit = build_timm_vit(cfg)
    path = tmp_path / "small.pth"
    torch.save({"model": vit.state_dict()}, path)
    model = load_checkpoint(path)
    assert isinstance(model, HydraViT)
    assert (model.config.num_heads, model.config.head_dim, model.config.img_size) == (3, 64, 32)


@pytest.mark.parametrize("head_dim,ratio", [(16, 2.7), (24, 3.3)])
def test_narrower_checkpoint_with_non_integer_mlp_width(tmp_path, head_dim, ratio):
    """The corner copy follows the slicing table: a k-head timm ViT with int(head_dim*k*mlp_ratio) MLP units."""
    cfg = TINY.replace(head_dim=head_dim, mlp_ratio=ratio, num_heads=5)
    x = images(cfg)
    for k in (1, 3):
        torch.manual_seed(k)
        narrow = build_timm_vit(cfg, k).eval()
        with torch.no_grad():
            for p in narrow.parameters():
                if p.dim() == 1:
                    p.normal_(0, 0.5)
        path = tmp_path / f"k{k}.pth"
        torch.save(narrow.state_dict(), path)
        model = load_checkpoint(path, cfg)
        with torch.no_grad():
            torch.testing.assert_close(model(x, heads=k), narrow(x), atol=1e-5, rtol=0)
    other = build_timm_vit(cfg.replace(mlp_ratio=2.0), 2)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"MLP width \d+ != \d+"):
        load_checkpoint(tmp_path / "other.pth", cfg)
