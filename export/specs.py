"""The inputs and outputs of a target's artifacts, declared once per target.

Every target's artifacts take ``image`` (float32 NCHW, already normalised) and return
``logits`` (float32 ``[batch, classes]``); targets differ only in the batch axis (fixed 1, or
symbolic) and in whether a single artifact takes k as an input (ONNX's ``heads``).  A target
declares that as one :class:`IOSpec` (``Exporter.io``, in the spirit of Hugging Face Optimum's
exporter configs); the converters take their tensor names and example input from it and the
artifact records list its :meth:`~IOSpec.inputs` / :meth:`~IOSpec.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .records import TensorSpec

__all__ = ["IMAGE", "LOGITS", "HEADS", "IOSpec"]

#: input and output names of every artifact, and the k input of a single ONNX graph.
IMAGE, LOGITS, HEADS = "image", "logits", "heads"


@dataclass(frozen=True)
class IOSpec:
    """The input/output signature of one target's artifacts for a model config."""

    #: the batch axis: a fixed size or the name of a dynamic axis (e.g. ``"batch"``).
    batch: Union[int, str] = 1
    #: a single artifact selects k by an int64 ``[1]`` input named :data:`HEADS`.
    heads_input: bool = False

    def image_shape(self, cfg) -> list[Union[int, str]]:
        return [self.batch, cfg.in_chans, cfg.img_size, cfg.img_size]

    def inputs(self, cfg, mode: str = "per-k") -> list[TensorSpec]:
        out = [TensorSpec(IMAGE, self.image_shape(cfg), "float32", "normalised RGB image, NCHW")]
        if mode == "single" and self.heads_input:
            out.append(TensorSpec(HEADS, [1], "int64", "head count k of the subnetwork to run"))
        return out

    def outputs(self, cfg) -> list[TensorSpec]:
        return [TensorSpec(LOGITS, [self.batch, cfg.num_classes], "float32", "class scores (pre-softmax)")]

    @staticmethod
    def example(cfg) -> Any:
        """The example input converters trace with: zeros of one image (``torch.Tensor``)."""
        import torch

        return torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size)
