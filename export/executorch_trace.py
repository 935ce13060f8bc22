"""Tracing for the ExecuTorch target: ``torch.export`` of a program on the example input, quietly."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

from .base import converting
from .specs import IOSpec

__all__ = ["_quiet", "_trace"]


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("executorch", "torch._export", "torch.export", "torch.utils._pytree"):
        lg = logging.getLogger(name)
        old = lg.level
        lg.setLevel(logging.ERROR)
        stack.callback(lg.setLevel, old)
    return stack


def _trace(module, cfg, k: int):
    """``torch.export`` of ``module`` (k's program) on the example input."""
    import torch

    with converting("executorch", "torch.export", k), _quiet(), torch.no_grad():
        return torch.export.export(module.eval(), (IOSpec.example(cfg),))
