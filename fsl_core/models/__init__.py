"""Few-shot models: Conv-4 / ResNet-12 backbones; ProtoNet, FRN, BiFRN, HMDRN and GSFL-Net.

``build_model(name, backbone, **options)`` is the single entry point; see ``factory.py``. Checkpoint files are
read and written by ``checkpoints.py`` (``save_model``/``load_model`` for models, ``save_checkpoint``/
``load_checkpoint`` for resumable training checkpoints, ``load_reference_checkpoint`` for the HMDRN authors'
released weights).
"""

from .backbones import Conv4, ResNet12, build_backbone, count_trainable
from .base import EpisodicModel
from .checkpoints import (
    load_checkpoint,
    load_model,
    load_reference_checkpoint,
    save_checkpoint,
    save_model,
)
from .factory import MODEL_NAMES, build_model, check_model_options, rebuild_model
from .gsfl import GSFLClassifier
from .hmdrn import ReconstructionNetwork
from .protonet import ProtoNet

__all__ = [
    "Conv4",
    "ResNet12",
    "build_backbone",
    "count_trainable",
    "EpisodicModel",
    "load_checkpoint",
    "load_model",
    "load_reference_checkpoint",
    "save_checkpoint",
    "save_model",
    "MODEL_NAMES",
    "check_model_options",
    "rebuild_model",
    "build_model",
    "GSFLClassifier",
    "ReconstructionNetwork",
    "ProtoNet",
]
