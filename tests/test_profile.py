import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hydravit_edge import HydraConfig, profile
from helpers import TINY, tiny_model


def _independent_macs(vit, config):
    """Count MACs with PyTorch's FlopCounterMode on the extracted timm ViT.

    timm's fused attention hides the two attention matmuls from the counter on CPU, so the
    explicit (unfused) attention path is used: both QK^T and AV are then plain matmuls.
    """
    for blk in vit.blocks:
        blk.attn.fused_attn = False
    x = torch.randn(1, config.in_chans, config.img_size, config.img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vit(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("config,ks", [(TINY, None), (HydraConfig(img_size=48, patch_size=16, depth=2, num_classes=11), (1, 3, 12))],
                         ids=["tiny", "64dim-heads"])
def test_params_and_macs_match_independent_counts(config, ks):
    model = tiny_model(config)
    for row in profile(config, ks):
        vit = model.subnet(row.k)
        assert row.params == sum(p.numel() for p in vit.parameters())
        assert row.macs == _independent_macs(vit, config)
        assert row.fp32_bytes == 4 * row.params and row.fp16_bytes == 2 * row.params
        assert row.embed_dim == config.head_dim * row.k


def test_ram_matches_torchinfo_estimated_total_size():
    torchinfo = pytest.importorskip("torchinfo")
    config = HydraConfig(img_size=64, patch_size=16, depth=2, num_classes=10)
    model = tiny_model(config)
    for row in profile(config, [1, 3, 12]):
        stats = torchinfo.summary(model.subnet(row.k), input_size=(1, 3, 64, 64), verbose=0)
        total_mb = (stats.total_input + stats.total_output_bytes + stats.total_param_bytes) / 1e6
        assert row.ram_mb == pytest.approx(total_mb, abs=0.006)


def test_default_config_reproduces_paper_table4():
    """The paper's Table 4 (HydraViT rows): RAM MB, GMACs, M params for dims 192..768."""
    paper = {3: (63.87, 1.25, 5.7), 4: (94.4, 2.14, 10.0), 5: (129.63, 3.25, 15.4), 6: (169.6, 4.6, 22.1),
             7: (214.27, 6.18, 29.9), 8: (263.68, 7.99, 38.8), 9: (317.8, 10.04, 49.0),
             10: (376.63, 12.31, 60.3), 11: (440.19, 14.82, 72.7), 12: (508.45, 17.56, 86.6)}
    for row in profile(HydraConfig(), range(3, 13)):
        ram, gmacs, mparams = paper[row.k]
        assert row.ram_mb == pytest.approx(ram, abs=0.02)
        assert row.macs / 1e9 == pytest.approx(gmacs, abs=0.006)
        assert row.params / 1e6 == pytest.approx(mparams, abs=0.2)  # paper rounds (72.9 vs 72.7 in two tables)


def test_profile_rejects_missing_k():
    with pytest.raises(ValueError):
        profile(TINY, [0])
