"""The XNNPACK-partitionable rewrites compute what timm's modules compute."""

import torch
import torch.nn.functional as F

from hydravit_edge.export.xnnpack_graph import XnnAttention, XnnLayerNorm, attention, layer_norm, xnnpack_friendly
from hydravit_edge.model import HydraViT

from helpers import TINY


def test_layer_norm_and_attention_match_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 48)
    w, b = torch.randn(48), torch.randn(48)
    assert torch.allclose(layer_norm(x, w, b, 1e-6), F.layer_norm(x, (48,), w, b, 1e-6), atol=1e-5)
    q, k, v = (torch.randn(2, 5, 48) for _ in range(3))
    ref = F.scaled_dot_product_attention(*(t.view(2, 5, 3, 16).transpose(1, 2) for t in (q, k, v)))
    assert torch.allclose(attention(q, k, v, 3, 16), ref.transpose(1, 2).reshape(2, 5, 48), atol=1e-5)


def test_rewritten_subnet_matches_timm_and_shares_its_weights():
    torch.manual_seed(0)
    model = HydraViT(TINY).eval()
    x = torch.randn(2, 3, TINY.img_size, TINY.img_size)
    for k in (1, 3, 4):
        vit = model.subnet(k).eval()
        ref = vit(x)
        params = {n: p.data_ptr() for n, p in vit.named_parameters()}
        out = xnnpack_friendly(vit)(x)
        assert torch.allclose(out, ref, atol=1e-5), k
        assert {n: p.data_ptr() for n, p in vit.named_parameters()} == params  # nothing copied
        assert not any(isinstance(m, torch.nn.LayerNorm) for m in vit.modules())
        assert sum(isinstance(m, XnnAttention) for m in vit.modules()) == TINY.depth
        assert sum(isinstance(m, XnnLayerNorm) for m in vit.modules()) == 2 * TINY.depth + 1
