"""The command lines, installed as console scripts (``pyproject.toml``) and runnable with ``python -m``:

- ``fsl-train`` (``python -m fsl_core.cli.train``): episodic training, also under ``torchrun`` (DDP);
- ``fsl-evaluate`` (``python -m fsl_core.cli.evaluate``): accuracy ± 95% CI of a checkpoint;
- ``fsl-predict`` (``python -m fsl_core.predict``): your own images classified from a support folder;
- ``fsl-notebook`` (``python -m fsl_core.notebooks``): a parameterised notebook through papermill;
- ``fsl-prepare`` (``python -m fsl_core.data.prepare``): CUB, Stanford Dogs, Stanford Cars in the few-shot layout;
- ``fsl-birds`` (``python -m fsl_core.data.birds``): the embedded generated birds set.
"""
