"""Benchmark harness, device reports and the end-to-end demo (``hydravit_edge.bench``)."""
