"""A :class:`SlicePredictor` for a loaded model, and the report entry that says what it runs with."""

from __future__ import annotations

from torch import nn

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.runtime.cpu import precision_name
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork

__all__ = ["as_predictor", "predictor_info"]


def predictor_info(predictor: SlicePredictor) -> dict:
    """What ran, for reports: ``backend``, ``precision``, ``device``, ``image_size``, ``tta`` (the predictor's own
    reading of its options, so a report cannot disagree with what ran; ``tta`` is also true when the network
    averages over flips itself, as a multi-class bundle with ``flip_average`` does)."""
    backend = "onnxruntime" if isinstance(predictor.network, OnnxRuntimeNetwork) else "torch"
    tta = predictor.tta or bool(getattr(predictor.network, "flip_average", False))  # or the model flip-averages
    return {"image_size": predictor.image_size, "tta": tta, "backend": backend,
            "precision": precision_name(predictor.bf16), "device": str(predictor.device),
            "compiled": predictor.compiled}


def as_predictor(model: object, image_size: int | None = None, device: str = "cpu", batch_size: int = 8,
                 bf16: bool | str = "auto", tta: bool = False) -> tuple[SlicePredictor, dict]:
    """A :class:`SlicePredictor` for ``model`` (LoadedModel, nn.Module or SlicePredictor) and its report entry."""
    if isinstance(model, SlicePredictor):
        return model, {"name": type(model.network).__name__, "trained": True, **predictor_info(model)}
    network = getattr(model, "network", model)
    if not isinstance(network, nn.Module):
        raise TypeError(f"model must be a LoadedModel, an nn.Module or a SlicePredictor, not {type(model).__name__}")
    size = getattr(model, "image_size", 352) if image_size is None else image_size
    info = {"name": getattr(model, "name", type(network).__name__)}
    if hasattr(model, "trained"):
        info["trained"] = bool(model.trained)
    version = (getattr(model, "meta", None) or {}).get("version")
    if version:
        info["version"] = str(version)
    predictor = SlicePredictor(network, image_size=size, device=device, batch_size=batch_size, bf16=bf16, tta=tta)
    return predictor, {**info, **predictor_info(predictor)}
