"""Training and evaluation of episodic few-shot models.

- ``train(config or settings)`` → ``TrainResult``: resumable episodic training (one or several processes)
  writing ``config.json``, ``metrics.csv``, ``last.pt`` and ``best.pt`` into the run folder.
- ``evaluate(model, dataset, way, shot, query, episodes, seed)`` → ``EvalResult``: mean accuracy ± 95%
  confidence interval; the cached path embeds every image once and gives the same episodes and accuracies
  as the plain path; ``evaluate_shots`` runs it for several shots → {shot: EvalResult}, ``results_to_dict``
  makes that JSON-ready.
- ``train_gsfl(model, train_data, GSFLTrainConfig(...), val_data)``: GSFL-Net's two-stage training with
  ordinary batches over the base classes.
"""

from fsl_core.engine.config import PROTOCOLS, TrainConfig
from fsl_core.engine.evaluate import (
    EvalResult,
    confidence_interval,
    evaluate,
    evaluate_checkpoint,
    evaluate_shots,
    results_to_dict,
)
from fsl_core.engine.gsfl_training import GSFLTrainConfig, train_gsfl
from fsl_core.engine.train import (
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    build_training_model,
    train,
)

__all__ = [
    "PROTOCOLS",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "EvalResult",
    "build_training_model",
    "confidence_interval",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_shots",
    "results_to_dict",
    "train",
    "GSFLTrainConfig",
    "train_gsfl",
]
