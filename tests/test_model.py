import pytest
import timm
import torch

from hydravit_edge import HydraConfig, HydraViT, UsageError
from hydravit_edge.model import build_timm_vit
from helpers import TINY, images, tiny_model


def test_state_dict_is_a_timm_vit():
    model = HydraViT(TINY)
    ref = build_timm_vit(TINY)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert got == want


@pytest.mark.parametrize("k", range(1, TINY.num_heads + 1))
def test_sliced_forward_equals_extracted_subnet(k):
    model = tiny_model()
    x = images()
    with torch.no_grad():
        sliced = model(x, heads=k)
        sub = model.subnet(k).eval()
        standalone = sub(x)
    assert isinstance(sub, timm.models.vision_transformer.VisionTransformer)
    assert sub.embed_dim == TINY.head_dim * k and sub.blocks[0].attn.num_heads == k
    assert sliced.shape == (x.shape[0], TINY.num_classes)
    torch.testing.assert_close(sliced, standalone, atol=1e-5, rtol=0)


def test_subnet_uses_only_leading_slices():
    """Perturbing anything outside the k-head corner leaves subnetwork k unchanged."""
    model = tiny_model()
    x = images()
    k = 2
    e, full = TINY.width(k), TINY.embed_dim
    with torch.no_grad():
        before = model(x, heads=k)
        for name, p in model.named_parameters():
            mask = torch.ones_like(p, dtype=torch.bool)
            if name.endswith("qkv.weight"):
                for i in range(3):
                    mask[i * full:i * full + e, :e] = False
            elif name.endswith("qkv.bias"):
                for i in range(3):
                    mask[i * full:i * full + e] = False
            elif name.endswith("fc1.weight"):
                mask[:4 * e, :e] = False
            elif name.endswith("fc1.bias"):
                mask[:4 * e] = False
            elif name.endswith("fc2.weight"):
                mask[:e, :4 * e] = False
            elif name == "head.weight":
                mask[:, :e] = False
            elif name == "head.bias":
                mask[:] = False
            elif name in ("cls_token", "pos_embed"):
                mask[..., :e] = False
            elif p.dim() == 2:
                mask[:e, :e] = False
            else:
                mask[:e] = False
            p[mask] = 1e3
        after = model(x, heads=k)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=0)
    assert not torch.allclose(model(x, heads=k + 1), before[:, :], atol=1e-2)


def test_forward_slices_are_views_no_weight_copies():
    """The forward pass allocates nothing weight-sized: slicing returns views of the parameters."""
    model = tiny_model()
    w = model.blocks[0].attn.qkv.weight
    e = TINY.width(1)
    view = w[:e, :e]
    assert view.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
    # and gradients land only inside the slice: zero elsewhere
    x = images()
    model.train()
    model(x, heads=1).sum().backward()
    g = model.blocks[0].mlp.fc1.weight.grad
    assert g[:4 * e, :e].abs().sum() > 0
    assert g[4 * e:].abs().sum() == 0 and g[:, e:].abs().sum() == 0


@pytest.mark.parametrize("bad", [0, -1, TINY.num_heads + 1, 2.5, "x"])
def test_heads_out_of_range_is_value_error(bad):
    model = tiny_model()
    with pytest.raises(ValueError, match="heads"):
        model(images(), heads=bad)
    with pytest.raises(UsageError):
        model.subnet(bad)


def test_default_heads_is_largest_available():
    cfg = TINY.replace(heads=(1, 2, 3))
    model = tiny_model(cfg)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, heads=3))


def test_separate_classifiers_selected_by_k():
    cfg = TINY.replace(separate_heads=True, heads=(2, 4))
    model = tiny_model(cfg)
    keys = set(model.state_dict())
    assert {"head_k.2.weight", "head_k.2.bias", "head_k.4.weight", "head_k.4.bias"} <= keys
    assert model.head_k["2"].weight.shape == (cfg.num_classes, cfg.width(2))
    x = images()
    with torch.no_grad():
        a = model(x, heads=2)
        model.head_k["2"].bias.add_(10.0)
        b = model(x, heads=2)
        c = model(x, heads=4)
        model.head_k["4"].bias.add_(10.0)
        d = model(x, heads=4)
        torch.testing.assert_close(b - a, torch.full_like(a, 10.0))
        torch.testing.assert_close(d - c, torch.full_like(c, 10.0))
        torch.testing.assert_close(model.subnet(2).eval()(x), model(x, heads=2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no classifier"):
        model(x, heads=3)


def test_timm_registry_builds_hydravit():
    model = timm.create_model("hydravit_base_patch16_224", num_classes=7, depth=2)
    assert isinstance(model, HydraViT)
    assert model.config.num_classes == 7 and model.config.embed_dim == 768
    assert isinstance(timm.create_model("hydravit_tiny_digits"), HydraViT)
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model("hydravit_base_patch16_224", pretrained=True)


def test_deit_equivalence_default_config():
    """subnet(3/6/12) of the default config load strictly into timm's DeiT-tiny/small/base.

    Built on the meta device: key and shape checks only, no 86M-parameter initialisation.
    """
    with torch.device("meta"):
        model = HydraViT(HydraConfig())
        for k, name in ((3, "deit_tiny_patch16_224"), (6, "deit_small_patch16_224"), (12, "deit_base_patch16_224")):
            deit = timm.create_model(name, pretrained=False)
            deit.load_state_dict(model.subnet_state_dict(k), strict=True, assign=True)
        # and the full HydraViT state dict *is* DeiT-base's
        deit_base = timm.create_model("deit_base_patch16_224", pretrained=False)
    assert {k: v.shape for k, v in deit_base.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("k,name", [(3, "deit_tiny_patch16_224"), (6, "deit_small_patch16_224"), (12, "deit_base_patch16_224")])
def test_deit_forward_equivalence_full_size(k, name):
    torch.manual_seed(0)
    model = HydraViT(HydraConfig()).eval()
    deit = timm.create_model(name, pretrained=False).eval()
    deit.load_state_dict(model.subnet_state_dict(k), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x, heads=k), deit(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("separate", [False, True])
def test_narrow_keeps_every_smaller_subnetwork(separate):
    torch.manual_seed(0)
    model = HydraViT(TINY.replace(separate_heads=separate)).eval()
    small = model.narrow(2)
    assert small.config.num_heads == 2 and small.config.heads == (1, 2)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, TINY.img_size, TINY.img_size)
    with torch.no_grad():
        for k in (1, 2):
            torch.testing.assert_close(small.forward_heads(x, k), model.forward_heads(x, k), rtol=0, atol=1e-6)
    assert model.narrow(TINY.num_heads) is model
    with pytest.raises(UsageError):
        model.narrow(TINY.num_heads + 1)


# --------------------------------------------------------------------------- MLP widths, timm options

@pytest.mark.parametrize("head_dim,ratio", [(16, 2.7), (24, 3.3)])
def test_non_integer_mlp_widths_match_subnet(head_dim, ratio):
    """timm's MLP of width e has int(e * mlp_ratio) units; int(mlp_ratio * head_dim) * k differs for some k here."""
    cfg = HydraConfig(img_size=16, patch_size=8, depth=2, num_heads=6, head_dim=head_dim, mlp_ratio=ratio, num_classes=5)
    assert any(int(ratio * head_dim) * k != int(head_dim * k * ratio) for k in cfg.heads)
    model = tiny_model(cfg)
    x = images(cfg)
    with torch.no_grad():
        for k in cfg.heads:
            sub = model.subnet(k).eval()
            assert sub.blocks[0].mlp.fc1.out_features == int(head_dim * k * ratio) == cfg.mlp_hidden(k)
            torch.testing.assert_close(model(x, heads=k), sub(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("option,value", [
    ("norm_layer", torch.nn.Identity), ("pre_norm", True), ("fc_norm", True), ("reg_tokens", 1),
    ("no_embed_class", True), ("patch_drop_rate", 0.1), ("proj_bias", False), ("scale_attn_norm", True),
    ("scale_mlp_norm", True), ("dynamic_img_size", True), ("final_norm", False),
    ("mlp_layer", __import__("timm").layers.SwiGLU), ("block_fn", torch.nn.Identity),
])
def test_timm_options_the_sliced_forward_cannot_honour_are_refused(option, value):
    with pytest.raises(UsageError, match=f"cannot honour timm option {option}="):
        HydraViT(TINY, **{option: value})


@pytest.mark.parametrize("option", ["embed_dim", "num_heads", "qkv_bias", "global_pool", "drop_path_rate"])
def test_timm_options_owned_by_the_config_are_refused(option):
    with pytest.raises(UsageError, match=f"'{option}' comes from the HydraConfig"):
        HydraViT(TINY, **{option: 1})
    with pytest.raises(UsageError, match="unknown timm VisionTransformer option 'nope'"):
        HydraViT(TINY, nope=1)


@pytest.mark.parametrize("options", [
    {"init_values": 1e-5}, {"qk_norm": True}, {"init_values": 0.3, "qk_norm": True, "act_layer": "gelu_tanh"},
    {"drop_rate": 0.1, "attn_drop_rate": 0.1, "proj_drop_rate": 0.1, "pos_drop_rate": 0.1, "pre_norm": False},
])
def test_honoured_timm_options_match_subnet_for_every_k(options):
    torch.manual_seed(0)
    model = HydraViT(TINY.replace(separate_heads=bool(options.get("qk_norm")), heads=(1, 2, 4)), **options).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerScale gammas and qk-norm weights far from their init
            p.add_(torch.randn_like(p) * 0.3)
    if "init_values" in options:
        assert "blocks.0.ls1.gamma" in model.slicing.params and model.slicing.params["blocks.0.ls1.gamma"].rule == "features"
    if "qk_norm" in options:
        assert model.slicing.params["blocks.0.attn.q_norm.weight"].rule == "whole"
    x = images()
    with torch.no_grad():
        for k in model.config.heads:
            sub = model.subnet(k).eval()
            assert type(sub.blocks[0].ls1) is type(model.blocks[0].ls1)
            assert type(sub.blocks[0].attn.q_norm) is type(model.blocks[0].attn.q_norm)
            torch.testing.assert_close(model(x, heads=k), sub(x), atol=1e-5, rtol=0)
        small = model.narrow(2)
        assert small.timm_options == model.timm_options
        torch.testing.assert_close(small(x, heads=2), model(x, heads=2), atol=1e-6, rtol=0)
    # the training path: leaf views of the same slices (dropout off to compare), gamma and qk-norm included
    with model.slice_leaves() as leaves:
        out = model.forward_heads(x, 2)
    torch.testing.assert_close(out, model(x, heads=2), atol=1e-5, rtol=0)
    out.sum().backward()
    views = leaves.by_param()
    if "init_values" in options:
        ((_, leaf),) = views[model.blocks[0].ls1.gamma]
        assert leaf.shape == (TINY.width(2),) and leaf.grad is not None
    if "qk_norm" in options:
        ((_, leaf),) = views[model.blocks[0].attn.q_norm.weight]
        assert leaf.shape == (TINY.head_dim,) and leaf.grad is not None


@pytest.mark.parametrize("cfg", [TINY, HydraConfig(img_size=16, patch_size=8, depth=1, num_heads=5, head_dim=16,
                                                   mlp_ratio=2.7, num_classes=5)])
def test_torch_export_with_a_symbolic_head_count(cfg):
    """One exported program for k = 2..H-1: the table's cuts and the MLP width formula trace symbolically
    (torch.export specialises k away from 1 and from a slice that spans a whole tensor, i.e. k = H)."""
    model = tiny_model(cfg)

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x, k):
            return self.m.forward_heads(x, k)

    x = images(cfg)
    ep = torch.export.export(Heads(), (x, 2), dynamic_shapes=({}, torch.export.Dim.DYNAMIC))
    with torch.no_grad():
        for k in range(2, cfg.num_heads):
            torch.testing.assert_close(ep.module()(x, k), model(x, heads=k), atol=1e-5, rtol=0)
