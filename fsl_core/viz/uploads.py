"""Bring your own photos in JupyterLab: an ipywidgets form with a ``FileUpload`` per class and one for the
images to classify, which fits a ``FewShotClassifier`` and shows its predictions.

``uploaded_images(upload)`` turns what a ``FileUpload`` holds into PIL images; ``UploadForm(classifier)``
builds the form. Its results are written into ``Output`` widgets through their ``outputs`` state (not by
capturing display calls), so the form also works in a kernel without a front end.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import pandas as pd
from IPython.display import Image as DisplayImage
from PIL import Image

from fsl_core.classifier import (
    ClassifierInputError,
    EmptySupportError,
    FewShotClassifier,
    NotAnImageError,
    UnreadableSupportError,
    open_image,
)

from .plots import figure_png
from .predictions import plot_predictions, plot_support_set

ACCEPT = "image/*,.jpg,.jpeg,.png,.bmp,.webp"
"""What the upload dialogs offer: images."""


def uploaded_images(upload: Any, where: str = "") -> dict[str, Image.Image]:
    """The files of an ipywidgets 8 ``FileUpload`` (the widget or its ``value``: dicts with ``name`` and
    ``content``) as {file name: PIL RGB image}, in upload order; a repeated name gets `` (2)``, `` (3)``, ...
    ``where``: the upload's place in the form, for the message ("under 'images to classify'").

    Raises:
        NotAnImageError: listing every uploaded file that cannot be decoded as an image.
    """
    value = getattr(upload, "value", upload)
    images: dict[str, Image.Image] = {}
    problems = []
    for entry in value:
        name = str(entry["name"])
        try:
            with Image.open(io.BytesIO(bytes(entry["content"]))) as handle:
                handle.load()
                image = open_image(handle)
                image = image.copy() if image is handle else image
        except Image.UnidentifiedImageError:
            problems.append(f"{name} (not an image file PIL can read)")
            continue
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            problems.append(f"{name} ({error})")
            continue
        unique, copy = name, 2
        while unique in images:
            unique, copy = f"{name} ({copy})", copy + 1
        images[unique] = image
    if problems:
        files = "file is not a readable image" if len(problems) == 1 else "files are not readable images"
        raise NotAnImageError(
            f"{len(problems)} uploaded {files}{f' {where}' if where else ''}: {'; '.join(problems)}. Choose the "
            "photos of that upload again, leaving these out or converted to JPEG, PNG, BMP or WebP (HEIC photos "
            "need converting)"
        )
    return images


class UploadForm:
    """The upload form: a class name and a ``FileUpload`` per class ("+ class" adds a row, "✕" empties one), a
    ``FileUpload`` for the images to classify, and "Classify", which fits ``classifier`` on the uploaded support
    set, shows it, and shows every uploaded image with its predicted class and probabilities; a chosen image is
    then explained (``FewShotClassifier.explain``). A row left without name and photos is not used.

    Args:
        classifier: the classifier to fit (it is re-fitted at every "Classify").
        classes: number of class rows at first (their names left to fill in), or their names.
    """

    def __init__(self, classifier: FewShotClassifier, classes: int | Sequence[str] = 2) -> None:
        import ipywidgets as widgets

        self.widgets = widgets
        self.classifier = classifier
        self.rows: list[tuple[Any, Any]] = []
        self.queries_upload = widgets.FileUpload(
            accept=ACCEPT,
            multiple=True,
            description="images to classify",
            tooltip="choose the photos to classify",
            layout=widgets.Layout(width="auto"),
        )
        self.queries_upload.observe(self._inputs_changed, names="value")
        self.add_button = widgets.Button(description="+ class", tooltip="add a class")
        self.classify_button = widgets.Button(description="Classify", button_style="primary")
        self.chosen = widgets.Dropdown(options=[], description="explain")
        self.explain_button = widgets.Button(description="Explain", disabled=True)
        self.output = widgets.Output()
        self.explanation = widgets.Output()
        self.class_box = widgets.VBox()
        self.probabilities: pd.DataFrame | None = None
        self._queries: dict[str, Image.Image] = {}
        names = [""] * classes if isinstance(classes, int) else list(classes)
        for name in names:
            self.add_class(name)
        self.add_button.on_click(lambda _: self.add_class())
        self.classify_button.on_click(lambda _: self.classify())
        self.explain_button.on_click(lambda _: self.explain())

    def add_class(self, name: str = "") -> None:
        """Add a class row: a name field, its ``FileUpload`` and "✕", which empties the row."""
        text = self.widgets.Text(
            value=name, description="class", placeholder=f"name of class {len(self.rows) + 1}"
        )
        upload = self.widgets.FileUpload(
            accept=ACCEPT,
            multiple=True,
            description="support images",
            tooltip="choose a few photos of this class",
            layout=self.widgets.Layout(width="auto"),
        )
        empty = self.widgets.Button(
            description="✕",
            tooltip="empty this row: its name and photos",
            layout=self.widgets.Layout(width="auto"),
        )
        empty.on_click(lambda _: self.empty_row(text, upload))
        for field in (text, upload):
            field.observe(self._inputs_changed, names="value")
        self.rows.append((text, upload))
        self.class_box.children = (*self.class_box.children, self.widgets.HBox([text, upload, empty]))

    @staticmethod
    def empty_row(text: Any, upload: Any) -> None:
        """Forget a row's name and photos: the row is then left out."""
        text.value, upload.value = "", ()

    def widget(self) -> Any:
        """The whole form, an ``ipywidgets.VBox``."""
        w = self.widgets
        return w.VBox(
            [
                w.HTML(
                    "<b>Support set</b>: a name and a few photos per class. One upload (all the photos chosen "
                    "together) should stay under about 10 MB: JupyterLab drops larger messages to the kernel"
                ),
                self.class_box,
                self.add_button,
                w.HTML("<b>Images to classify</b>"),
                w.HBox([self.queries_upload]),  # its own width, as the class rows' uploads
                self.classify_button,
                self.output,
                w.HBox([self.chosen, self.explain_button]),
                self.explanation,
            ]
        )

    def support(self) -> dict[str, list[Image.Image]]:
        """{class name: uploaded images} of the rows that have a name or images (rows of one name merged); a row
        with neither is left out.

        Raises:
            UnreadableSupportError: a named class without photos, or photos without a class name (the message
                says what to add, or that "✕" empties the row to leave it out).
            EmptySupportError: no row holds anything.
        """
        support: dict[str, list[Image.Image]] = {}
        unnamed = []
        for number, (text, upload) in enumerate(self.rows, 1):
            name = text.value.strip()
            images = list(
                uploaded_images(upload, f"for class {name!r}" if name else f"in row {number}").values()
            )
            if name:
                support.setdefault(name, []).extend(images)
            elif images:
                unnamed.append(f"row {number} ({len(images)} photo{'s' * (len(images) != 1)})")
        problems = []
        if unnamed:
            problems.append(
                f"{', '.join(unnamed)} {'has' if len(unnamed) == 1 else 'have'} photos but no class name: type one"
            )
        if empty := [name for name, images in support.items() if not images]:
            problems.append(
                f"{', '.join(map(repr, empty))} {'has' if len(empty) == 1 else 'have'} no photos yet: upload some "
                "under 'support images'"
            )
        if problems:
            raise UnreadableSupportError("; ".join(problems) + ". '✕' empties a row to leave it out")
        if not support:
            raise EmptySupportError("no class yet: give two rows or more a class name and a few photos each")
        return support

    def queries(self) -> dict[str, Image.Image]:
        """{file name: image} of the uploaded images to classify."""
        return uploaded_images(self.queries_upload, "under 'images to classify'")

    def _show(self, output: Any, figure: Any) -> None:
        output.append_display_data(DisplayImage(data=figure_png(figure)))

    def _say(self, text: str) -> None:
        """A message under the Classify button, wrapped as prose (``text/plain`` holds it as it is)."""
        paragraph = f'<p style="white-space: normal; max-width: 60em">{html.escape(text)}</p>'
        message = {"output_type": "display_data", "data": {"text/plain": text, "text/html": paragraph}}
        self.output.outputs = (*self.output.outputs, {**message, "metadata": {}})

    def _inputs_changed(self, _: Any) -> None:
        """A message about the inputs is dropped once they change (results stay until Classify is pressed)."""
        if self.probabilities is None:
            self.output.outputs = ()

    def classify(self) -> pd.DataFrame | None:
        """Fit on the uploaded support set, classify the uploaded images and show both; returns the
        probabilities (``predict_proba``), or None after showing what is missing or wrong."""
        self.output.outputs = ()
        self.explanation.outputs = ()
        self.explain_button.disabled = True
        self._queries, self.probabilities, self.chosen.options = {}, None, []
        self.classify_button.disabled, self.classify_button.description = True, "classifying…"
        try:
            support, queries = self.support(), self.queries()
            if not queries:
                raise NotAnImageError("no images to classify yet: upload some under 'images to classify'")
            self.classifier.fit(support)
            probabilities = self.classifier.predict_proba(queries)
        except ClassifierInputError as error:
            self._say(str(error))
            return None
        except Exception as error:  # shown under the button: a callback's error would reach only the log
            self._say(f"classifying failed: {type(error).__name__}: {error}")
            return None
        finally:
            self.classify_button.disabled, self.classify_button.description = False, "Classify"
        self._queries, self.probabilities = queries, probabilities
        self._show(self.output, plot_support_set(self.classifier.support_))
        self._show(self.output, plot_predictions(queries, probabilities))
        self.chosen.options = list(queries)
        self.chosen.value = next(iter(queries))
        self.explain_button.disabled = False
        return probabilities

    def explain(self) -> None:
        """Show ``FewShotClassifier.explain`` of the image chosen in the drop-down list."""
        self.explanation.outputs = ()
        if self.chosen.value in self._queries:
            name = self.chosen.value
            self._show(self.explanation, self.classifier.explain({name: self._queries[name]}))


__all__ = ["ACCEPT", "uploaded_images", "UploadForm"]
