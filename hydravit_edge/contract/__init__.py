"""The documents the toolkit and the apps exchange, as typed models with one reader each.

* :class:`~.manifest.Manifest`: ``manifest.json`` of an export directory (``Manifest.load(dir)``);
* :class:`~.report.Report`: a benchmark report ``reports/<device>.json`` (``Report.load(path)``);
* :class:`~.lut.Lut`: the per-device lookup table ``lut.json`` (``Lut.load(path)``).

Their JSON Schemas (read by the Kotlin and Swift apps and their tests) are generated from these
models: ``python -m hydravit_edge.contract.schemas --write`` (``--check`` says whether the
committed files are current; a test runs it).  Importing this package needs pydantic only:
no torch, numpy or runtime.
"""
