"""Few-shot models: Conv-4 / ResNet-12 backbones; ProtoNet, FRN, BiFRN, HMDRN and GSFL-Net.

``build_model(name, backbone, **options)`` is the single entry point; see ``factory.py``.
"""

from .backbones import Conv4, ResNet12, build_backbone, count_trainable
from .base import EpisodicModel, concat_embeddings, index_embedding
from .checkpoints import load_model, load_reference_checkpoint, reference_key, save_model
from .factory import MODEL_NAMES, build_model
from .hmdrn import ReconstructionNetwork
from .protonet import ProtoNet

__all__ = [
    "Conv4",
    "ResNet12",
    "build_backbone",
    "count_trainable",
    "EpisodicModel",
    "concat_embeddings",
    "index_embedding",
    "load_model",
    "load_reference_checkpoint",
    "reference_key",
    "save_model",
    "MODEL_NAMES",
    "build_model",
    "ReconstructionNetwork",
    "ProtoNet",
]
