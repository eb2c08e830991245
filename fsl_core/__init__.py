"""fsl_core: few-shot fine-grained image classification.

Models (HMDRN, BiFRN, FRN, ProtoNet, GSFL-Net), episode samplers, data sets, training,
evaluation and visualisation, driven by parameterised notebooks.
"""

import os

# PyTorch backs large CPU tensors with transparent huge pages when this is set before it allocates its first
# CPU tensor, of any size (it reads the variable once, then): a Conv-4 training step then takes about 25 times
# fewer page faults and FRN's ran 1.52× faster on a 2-core AMD EPYC, with no extra memory
# (docs/benchmarks.md). An explicit THP_MEM_ALLOC_ENABLE=0 is respected.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

__all__ = ["FewShotClassifier", "__version__"]


def __getattr__(name: str) -> object:
    """``FewShotClassifier`` (``fsl_core.classifier``), imported on first use so that ``import fsl_core`` stays
    light."""
    if name == "FewShotClassifier":
        from fsl_core.classifier import FewShotClassifier

        return FewShotClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
