"""Training universal HydraViT weights by stochastic head-count sampling (``hydravit_edge.train``)."""
