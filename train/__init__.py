"""Training universal HydraViT weights by stochastic head-count sampling (``hydravit_edge.train``).

>>> from hydravit_edge.train import TrainConfig, train, evaluate
>>> result = train(TrainConfig(data="digits", out="runs/digits"))
>>> evaluate(result.best, data="digits", heads="1..12").top1()
"""

from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .recipes import RECIPES, Recipe, get_recipe
from .runs import RunDir, latest_checkpoint, latest_run
from .sampler import HeadSampler, parse_weights
from .trainer import Trainer, TrainResult, evaluate_model, resume, train

__all__ = [
    "TrainConfig", "train", "resume", "evaluate", "EvalResult", "TrainResult", "Trainer", "evaluate_model",
    "HeadSampler", "parse_weights", "Recipe", "RECIPES", "get_recipe", "RunDir", "latest_run", "latest_checkpoint",
]
