"""coremltools for the Core ML target: imported quietly, with this package's two extensions.

* ``aten.alias``: torch >= 2.6 leaves alias nodes (e.g. a full-range slice) in exported
  programs; coremltools 9.0 translates ``alias_copy`` but not ``alias``.  Both are the identity.
* ``hydravit_edge::const_elimination_keep_weight_slices``: coremltools' ``const_elimination``,
  except that slices of float constants (and what is computed from them) stay in the program,
  so every function of a multifunction package references the same full-size weights
  (:func:`shared_weights_pipeline`; see :mod:`.coreml`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

__all__ = ["quiet", "coremltools_quietly", "shared_weights_pipeline", "KEEP_WEIGHT_SLICES"]

#: the registered name of the const-elimination pass that keeps weight slices.
KEEP_WEIGHT_SLICES = "hydravit_edge::const_elimination_keep_weight_slices"


@contextlib.contextmanager
def quiet():
    """Silence coremltools' progress bars, version warnings and logging during conversion."""
    logger = logging.getLogger("coremltools")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)


def coremltools_quietly():
    """Import coremltools (quietly) and register this module's two coremltools extensions."""
    with quiet():
        import coremltools as ct
        from coremltools.converters.mil.frontend.torch.ops import _get_inputs
        from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op
        from coremltools.converters.mil.mil import types
        from coremltools.converters.mil.mil.passes.defs.cleanup.const_elimination import const_elimination
        from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    # torch >= 2.6 leaves aten.alias nodes (e.g. a full-range slice) in exported programs;
    # coremltools 9.0 translates alias_copy but not alias.  Both are the identity.
    if _TORCH_OPS_REGISTRY.get_func("alias") is None:
        def alias(context, node):
            context.add(_get_inputs(context, node)[0], torch_name=node.name)

        register_torch_op(alias)

    if KEEP_WEIGHT_SLICES not in PASS_REGISTRY:
        slicers = {"slice_by_index", "slice_by_size"}

        def protect(block) -> None:
            """Mark slices of float constants, and everything computed from them, as not foldable."""
            kept: set = set()
            for op in block.operations:
                for b in op.blocks:
                    protect(b)
                hit = any(v in kept for v in op.get_flattened_inputs())
                if not hit and op.op_type in slicers:
                    x = op.x
                    hit = types.is_float(x.dtype) and x.val is not None and np.size(x.val) > 1
                if hit:
                    for o in op.outputs:
                        kept.add(o)
                        # const_elimination folds a var only when nonreplaceable_vars_upstream is empty
                        o.nonreplaceable_vars_upstream = set(o.nonreplaceable_vars_upstream) | {o}

        class const_elimination_keep_weight_slices(const_elimination):
            """``common::const_elimination`` that keeps slices of weights as ops (shared weights)."""

            def apply(self, prog):
                for f in prog.functions.values():
                    protect(f)
                    self._const_elimination_block(f)

        register_pass(namespace="hydravit_edge")(const_elimination_keep_weight_slices)
    return ct


def shared_weights_pipeline(ct):
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.passes = [KEEP_WEIGHT_SLICES if p == "common::const_elimination" else p for p in pipeline.passes]
    return pipeline
