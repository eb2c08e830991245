"""``python -m fsl_core.predict CHECKPOINT SUPPORT_DIR IMAGE...``: classify images with a trained few-shot model
(the ``fsl-predict`` command line, ``fsl_core.cli.predict``); the Python interface is
``fsl_core.FewShotClassifier``."""

import sys

from fsl_core.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
