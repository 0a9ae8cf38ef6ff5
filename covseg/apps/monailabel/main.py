"""covseg's MONAI Label app (this folder is the app: MONAI Label loads ``main.py`` and finds the app class).

Models (``GET /info/``):

* ``covseg_infection``: COVID-19 infection, the shipped Inf-Net bundle (``bundles/infnet``) or, once a training has
  published, its fine-tuned weights ``<app>/model/covseg_infection/model.pt``;
* ``covseg_lungs``: right and left lung, covseg's lung mask;
* ``covseg_ggo_consolidation``: ground-glass opacity and consolidation, offered only when
  ``bundles/multiclass_infnet`` exists with its weights;
* ``covseg_jcs_diagnosis``: the JCS joint diagnosis (``bundles/jcs_classifier`` decides the patient, the infection
  model segments unless negative; the decision comes in the result JSON), offered when the classifier bundle exists.

Trainer ``covseg_infection`` fine-tunes the infection model on the datastore's labelled volumes. Active learning:
MONAI Label's ``random`` strategy (next unlabelled volume).
"""

from __future__ import annotations

import covseg.apps.monailabel.compat  # noqa: F401  (the pydicom 3 shim: before monailabel is imported)

# isort: split
import logging
import os
import sys
from pathlib import Path

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.random import Random

from covseg import __version__
from covseg.apps.monailabel.datastore import CheckedDatastore
from covseg.apps.monailabel.http_errors import http_error, request_failed
from covseg.apps.monailabel.infer_tasks import DiagnosisInfer, InfectionInfer, LungInfer, MulticlassInfer
from covseg.apps.monailabel.train_task import CannotTrain, InfectionTrain
from covseg.apps.monailabel.weights import (
    CLASSIFIER_BUNDLE,
    INFECTION_MODEL,
    MULTICLASS_BUNDLE,
    ModelCache,
    bundle_available,
    multiclass_available,
    published_weights,
)
from covseg.io.errors import CovsegInputError
from covseg.networks.loading import DEFAULT_BUNDLE

log = logging.getLogger(__name__)

LUNG_MODEL = "covseg_lungs"
MULTICLASS_MODEL = "covseg_ggo_consolidation"
DIAGNOSIS_MODEL = "covseg_jcs_diagnosis"


def _in_task_subprocess() -> bool:
    """True in the subprocess MONAI Label runs a training in (``python -m monailabel.interfaces.utils.app``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "monailabel.interfaces.utils.app"


class CovsegLabelApp(MONAILabelApp):
    """covseg's models as MONAI Label infer tasks, and fine-tuning of the infection model."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = Path(app_dir) / "model"
        self.infection_bundle = Path(conf.get("infection_bundle", DEFAULT_BUNDLE))
        self.multiclass_bundle = Path(conf.get("multiclass_bundle", MULTICLASS_BUNDLE))
        self.classifier_bundle = Path(conf.get("classifier_bundle", CLASSIFIER_BUNDLE))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="covseg",
                         description="covseg: COVID-19 lung infection segmentation of chest CT (Inf-Net on MONAI)",
                         version=__version__)

    def init_datastore(self) -> CheckedDatastore:
        """MONAI Label's local datastore, refusing uploads covseg cannot read (:mod:`.datastore`)."""
        return CheckedDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict:
        infection = ModelCache(self.infection_bundle, published_weights(self.model_dir, INFECTION_MODEL))
        infers = {INFECTION_MODEL: InfectionInfer(infection), LUNG_MODEL: LungInfer()}
        if bundle_available(self.classifier_bundle):
            infers[DIAGNOSIS_MODEL] = DiagnosisInfer(infection, ModelCache(self.classifier_bundle))
        if multiclass_available(self.multiclass_bundle):
            infers[MULTICLASS_MODEL] = MulticlassInfer(ModelCache(self.multiclass_bundle))
        else:
            log.info("no %s with weights: the GGO / consolidation model is not offered", self.multiclass_bundle)
        return infers

    def init_trainers(self) -> dict:
        return {INFECTION_MODEL: InfectionTrain(self.model_dir / INFECTION_MODEL, self.infection_bundle)}

    def init_strategies(self) -> dict:
        return {"random": Random()}

    def bundle_path(self, model: str | None) -> str | None:
        """Asked by MONAI Label in the server before it starts a train or batch-infer subprocess: an unknown model is
        refused there (404), not in the subprocess's traceback seconds later."""
        known = {**self._trainers, **self._infers, **self._scoring_methods}
        if model is not None and model not in known:
            raise http_error(404, f"unknown model {model!r} (trainers: {', '.join(self._trainers)}; models: "
                                  f"{', '.join(self._infers)})")
        return super().bundle_path(model)

    def train(self, request: dict) -> dict:
        """MONAI Label's train; a training that cannot start (no usable label, a bad setting) ends with one error line
        (in ``GET /train/``'s details: MONAI Label runs this in a subprocess), not a traceback."""
        try:
            return super().train(request)
        except (CannotTrain, CovsegInputError) as exc:
            failed = request_failed(f"train {request.get('model')}", exc)
            if _in_task_subprocess():
                raise SystemExit(1) from None
            raise failed from None

    def infer(self, request: dict, datastore=None) -> dict:
        """MONAI Label's infer, with an unknown model or image, an unusable input or a bad setting answered as an
        HTTP error naming it in one line (:mod:`.http_errors`), not as a bare 500."""
        model, image = request.get("model"), request.get("image")
        if model not in self._infers:
            raise http_error(404, f"infer: unknown model {model!r} (models: {', '.join(self._infers)})")
        store = datastore or self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not store.get_image_uri(image):
            raise http_error(404, f"infer {model}: image {image!r} not found: no such image id in the datastore "
                                  f"{self.studies} (GET /datastore/?output=all lists them)")
        try:
            return super().infer(request, datastore)
        except Exception as exc:
            raise request_failed(f"infer {model}", exc) from None
