"""MONAI Label's local datastore, checking what is uploaded before it is stored.

MONAI Label copies an uploaded image or label into the studies folder as it comes: a damaged file, or a label of
another scan, replaced a good one and made the next training fail. Here ``PUT /datastore/image`` must be a CT that
covseg reads, and ``PUT /datastore/label`` a label that covseg reads on its image's grid (the checks of
:func:`covseg.io.read_volume` and :func:`covseg.io.labels.read_label`, as training uses them) holding integers
0..255; otherwise the request is answered with an HTTP error naming the file and the reason (:mod:`.http_errors`),
and the datastore keeps what it had. :meth:`CheckedDatastore.datalist` adds to each training pair the label values
that are infection, from the segment names the viewer sent with the label (:mod:`.label_names`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from covseg.apps.monailabel.http_errors import http_error, request_failed
from covseg.apps.monailabel.label_names import infection_values
from covseg.io import read_volume
from covseg.io.errors import CovsegInputError
from covseg.io.labels import read_label

log = logging.getLogger(__name__)

__all__ = ["MAX_LABEL", "CheckedDatastore", "label_values_problem"]

MAX_LABEL = 255


class CheckedDatastore(LocalDatastore):
    """A :class:`LocalDatastore` that refuses images and labels covseg cannot use."""

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Store an uploaded image once it reads as CT."""
        try:
            read_volume(image_filename)
        except CovsegInputError as exc:
            raise http_error(422, f"image {image_id!r}: uploaded file refused: {exc.reason}") from None
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Store an uploaded label once it reads on its image's grid."""
        what = f"label {label_tag!r} of image {image_id!r}"
        image = self.get_image_uri(image_id)
        if not image:
            raise http_error(404, f"{what}: no such image id in the datastore {self._datastore_path}")
        try:
            volume = read_volume(image)
        except CovsegInputError as exc:
            raise request_failed(what, exc) from None
        try:
            label, _ = read_label(label_filename, volume)
        except CovsegInputError as exc:
            raise http_error(422, f"{what}: uploaded file refused: {exc.reason}") from None
        problem = label_values_problem(label)
        if problem:
            raise http_error(422, f"{what}: uploaded file refused: {problem}")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """MONAI Label's ``{"image", "label"}`` training pairs, each with ``infection_values`` when the final
        label's stored segment names say which values are infection (:func:`.label_names.infection_values`)."""
        pairs = super().datalist(full_path)
        tag = DefaultLabelTag.FINAL.value
        values = {}
        for image_id in self.get_labeled_images():
            uri = self.get_label_uri(image_id, tag)
            if uri:
                values[os.path.realpath(uri)] = infection_values(self.get_label_info(image_id, tag))
        for pair in pairs:
            found = values.get(os.path.realpath(pair["label"]))
            if found is not None:
                pair["infection_values"] = found
        return pairs


def label_values_problem(label: np.ndarray) -> str | None:
    """Why ``label`` is not a label map (integers 0..255: training takes every non-zero voxel as infection), or
    None. A CT or a probability map uploaded by mistake would otherwise teach the model that bone or the whole
    lung is infection."""
    low, high = float(label.min(initial=0)), float(label.max(initial=0))
    if low < 0 or high > MAX_LABEL or not np.array_equal(label, np.round(label)):
        kind = "non-integer values" if not np.array_equal(label, np.round(label)) else "values"
        return (f"not a label map: {kind} {low:g}..{high:g} (a label holds integers 0..{MAX_LABEL}; is it the CT "
                "or a probability map?)")
    return None
