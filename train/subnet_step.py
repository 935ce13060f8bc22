"""Optimizer steps that touch only the sampled subnetwork's weights.

The paper trains subnetwork k by including "only these [weights] in both the backpropagation
and forward paths".  With ``--update subnet`` (the default) a step does exactly that, at the
cost of subnetwork k rather than of the whole model:

* the forward runs inside :meth:`HydraViT.slice_leaves`, so every weight slice is a leaf view
  of the full parameter and backward writes gradients sized to the slices (no zero-filled
  full-size ``.grad`` buffers);
* :func:`subnet_step` steps the run's own optimizer (timm's ``create_optimizer_v2``) over those
  views, with its state (AdamW's moments) sliced the same way, so weights, moments and weight
  decay outside subnetwork k are left exactly as they are.

A parameter's first update initialises the optimizer state for the whole tensor with one
ordinary step (its gradient scattered into a zero tensor); scalar state such as AdamW's step
count is shared by the views of a tensor and advances once per step.  ``--update full`` keeps
the other behaviour: zero gradients outside the subnetwork and an optimizer step over every
parameter (moments outside subnetwork k keep moving them), through DDP when distributed.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from hydravit_edge.model import SliceLeaves

__all__ = ["UPDATES", "subnet_step", "step_tensors", "full_gradient", "clip_grad_norm"]

#: ``--update`` choices
UPDATES = ("subnet", "full")


def step_tensors(leaves: SliceLeaves, params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor the next step updates: the leaf views, then whole parameters with a gradient."""
    taken = {id(p) for p, _, _ in leaves.items.values()}
    out = [leaf for _, _, leaf in leaves.items.values() if leaf.grad is not None]
    return out + [p for p in params if id(p) not in taken and p.grad is not None]


def clip_grad_norm(tensors: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over the step's tensors (the norm equals the full-size gradients' norm)."""
    return torch.nn.utils.clip_grad_norm_(tensors, max_norm)


def full_gradient(p: torch.Tensor, leaves: SliceLeaves) -> Optional[torch.Tensor]:
    """The full-size gradient of ``p`` the leaf views imply (zero outside them), for inspection."""
    views = leaves.by_param().get(p)
    if not views:
        return p.grad
    g = torch.zeros_like(p)
    for idx, leaf in views:
        if leaf.grad is not None:
            g[idx] += leaf.grad
    return g


def subnet_step(optimizer: torch.optim.Optimizer, leaves: SliceLeaves) -> None:
    """Step ``optimizer`` over the views in ``leaves`` (and whole parameters that have a gradient)."""
    views = leaves.by_param()
    saved_groups = [g["params"] for g in optimizer.param_groups]
    temp_states: list[torch.Tensor] = []
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for group in optimizer.param_groups:
            params = []
            for p in group["params"]:
                pv = views.get(p)
                if pv is None:
                    if p.grad is not None:
                        params.append(p)
                    continue
                pv = [(idx, leaf) for idx, leaf in pv if leaf.grad is not None]
                if not pv:
                    continue
                state = optimizer.state.get(p)
                if not state:  # first update: one ordinary step creates the whole tensor's state
                    g = torch.zeros_like(p)
                    for idx, leaf in pv:
                        g[idx] += leaf.grad
                    p.grad = g
                    params.append(p)
                    continue
                for i, (idx, leaf) in enumerate(pv):
                    # a strided view gets contiguous working copies: fused kernels (AdamW's on CPU)
                    # treat a strided tensor as if it were dense and would write outside the slice
                    dense = leaf.is_contiguous() and p.is_contiguous()
                    work = leaf if dense else \
                        leaf.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
                    if not dense:
                        work.grad = leaf.grad.contiguous()
                        copies.append((leaf.detach(), work.detach()))
                    wstate = {}
                    for name, v in state.items():
                        if torch.is_tensor(v) and v.shape == p.shape:
                            wstate[name] = v[idx] if dense else v[idx].clone(memory_format=torch.contiguous_format)
                            if not dense:
                                copies.append((v[idx], wstate[name]))
                        else:  # scalars (AdamW's step) are shared by the first view and advance once
                            wstate[name] = v if i == 0 or not torch.is_tensor(v) else v.clone()
                    optimizer.state[work] = wstate
                    temp_states.append(work)
                    params.append(work)
            group["params"] = params
        optimizer.step()
        with torch.no_grad():
            for dst, src in copies:
                dst.copy_(src)
    finally:
        for group, ps in zip(optimizer.param_groups, saved_groups):
            group["params"] = ps
        for work in temp_states:
            optimizer.state.pop(work, None)
        for p in views:
            if p.grad is not None:  # the scattered first-update gradients
                p.grad = None
