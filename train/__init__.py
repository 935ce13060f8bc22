"""Training universal HydraViT weights by stochastic head-count sampling (``hydravit_edge.train``).

>>> from hydravit_edge.train import TrainConfig, train, evaluate
>>> result = train(TrainConfig(data="digits", out="runs/digits"))
>>> evaluate(result.best, data="digits", heads="1..12").top1()
"""

import importlib

# Imported on first use, so that `hydravit_edge.train.cli` (and with it the whole command line) loads
# without importing PyTorch, and where the `train` extra is not installed at all.
_EXPORTS = {
    "TrainConfig": "config", "EvalResult": "evaluation", "evaluate": "evaluation", "RECIPES": "recipes",
    "Recipe": "recipes", "get_recipe": "recipes", "RunDir": "runs", "latest_checkpoint": "runs",
    "latest_run": "runs", "HeadSampler": "sampler", "parse_weights": "sampler", "Trainer": "trainer",
    "TrainResult": "trainer", "evaluate_model": "evaluation", "resume": "api", "train": "api",
}

__all__ = [
    "TrainConfig", "train", "resume", "evaluate", "EvalResult", "TrainResult", "Trainer", "evaluate_model",
    "HeadSampler", "parse_weights", "Recipe", "RECIPES", "get_recipe", "RunDir", "latest_run", "latest_checkpoint",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hydravit_edge.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
