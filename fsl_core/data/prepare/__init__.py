"""Preparation of the real benchmarks (CUB-200-2011, Stanford Dogs, Stanford Cars) into the few-shot
folder layout ROOT/{train,val,test}/<class>/<image> with ``val_pre/`` and ``test_pre/``.

Command line: ``python -m fsl_core.data.prepare cub|dogs|cars SRC DST [options]`` and
``python -m fsl_core.data.prepare check ROOT``. Folders already prepared by FRN or BiFRN
(``CUB_fewshot_cropped``, ``cars_196``, ``dogs``) need no preparation: ``FewShotFolder(root, split)``
reads them as they are.
"""

from .cars import cars_box, class_folder_name, prepare_cars, read_cars
from .check import check_prepared
from .cub import cub_box, prepare_cub, read_cub
from .dogs import dogs_box, prepare_dogs, read_dogs
from .source import Box, PrepareError, SourceDataset, SourceImage
from .splits import (
    SPLITS_DIR,
    ClassSplit,
    committed_split,
    committed_split_path,
    draw_split,
    frn_cub_split,
    load_split,
)
from .writer import SUMMARY_NAME, format_summary, pre_resize, prepare_folder

__all__ = [
    "cars_box",
    "class_folder_name",
    "prepare_cars",
    "read_cars",
    "check_prepared",
    "cub_box",
    "prepare_cub",
    "read_cub",
    "dogs_box",
    "prepare_dogs",
    "read_dogs",
    "Box",
    "PrepareError",
    "SourceDataset",
    "SourceImage",
    "SPLITS_DIR",
    "ClassSplit",
    "committed_split",
    "committed_split_path",
    "draw_split",
    "frn_cub_split",
    "load_split",
    "SUMMARY_NAME",
    "format_summary",
    "pre_resize",
    "prepare_folder",
]
