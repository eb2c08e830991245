"""fsl_core: few-shot fine-grained image classification.

Models (HMDRN, BiFRN, FRN, ProtoNet, GSFL-Net), episode samplers, data sets, training,
evaluation and visualisation, driven by parameterised notebooks.
"""

__version__ = "0.1.0"
