"""Command-line options that ``infer`` and ``demo`` share (model, device, precision, outputs) and their checks; the
reference-label options of ``infer`` and ``diagnose`` and the label-value types they share with ``slices``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covseg.cli.common import error
from covseg.reports.label_scores import MAX_LABEL_VALUE

__all__ = ["add_label_args", "add_label_value_args", "add_model_args", "add_output_args", "bundle_kind_problem",
           "check_model_args", "label_args_problem", "label_classes", "label_values"]

_KINDS = {"classes": "a slice classifier", "segmentation": "a segmentation model"}


def add_output_args(p: argparse.ArgumentParser) -> None:
    """Which pictures and files beside the masks a run writes."""
    p.add_argument("--overlays", choices=("none", "infected", "all"), default="none",
                   help="also write one overlay PNG per axial slice into <volume>/overlays/: none (default), the "
                        "slices holding infection, or all slices")
    p.add_argument("--no-figures", action="store_true",
                   help="no pictures (montage, reformats, infection curve, overlays); report.html keeps the tables")
    p.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=None,
                   help="write infection_seg.dcm (DICOM-SEG referencing the source series) and with it "
                        "infection_sr.dcm (DICOM-SR: the segments' volumes and %% of the lung) for DICOM inputs "
                        "(default: on for DICOM inputs)")


def label_values(text: str) -> tuple[int, ...]:
    """``V[,V]`` (``--label-values``): label values, positive integers; an ``argparse`` type (a bad value is
    argparse's one-line usage error, exit 2)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(not 0 < v <= MAX_LABEL_VALUE for v in values):
        raise argparse.ArgumentTypeError(f"give positive integers separated by commas (e.g. 3 or 1,2), got {text!r}")
    return values


def label_classes(text: str) -> tuple[int, int]:
    """``GGO,CONS`` (``--label-classes``): the label values of ground-glass opacity and consolidation, two different
    positive integers; an ``argparse`` type."""
    values = label_values(text)
    if len(values) != 2 or values[0] == values[1]:
        raise argparse.ArgumentTypeError(f"give 2 different values (GGO,consolidation), got {text!r}")
    return values[0], values[1]


def add_label_args(p: argparse.ArgumentParser) -> None:
    """``--labels DIR`` (reference masks, scored into the reports) and which of their values count:
    ``--label-values`` or ``--label-classes``."""
    p.add_argument("--labels", metavar="DIR", help="reference masks <DIR>/<volume>.nii.gz (>0 = infection, unless "
                                                   "--label-values): adds Dice, Sen., Spec., Prec., MAE to the reports")
    add_label_value_args(p, "the --labels masks", "a multi-class bundle's")


def add_label_value_args(p: argparse.ArgumentParser, masks: str, scores_of: str) -> None:
    """``--label-values V[,V]`` or ``--label-classes GGO,CONS``: which values of ``masks`` (e.g. "the --labels
    masks") are infection, or each class, for ``scores_of`` (e.g. "a multi-class bundle's") per-class scores."""
    values = p.add_mutually_exclusive_group()
    values.add_argument("--label-values", metavar="V[,V]", type=label_values,
                        help=f"the values of {masks} that are infection, the others background (default: every "
                             "non-zero value; e.g. 3 for COVID-19-CT-Seg's lung-and-infection masks)")
    values.add_argument("--label-classes", metavar="GGO,CONS", type=label_classes,
                        help=f"the values of {masks} that are ground-glass opacity and consolidation, for "
                             f"{scores_of} per-class scores (infection is both)")


def label_args_problem(args: argparse.Namespace) -> str | None:
    """``--label-values`` / ``--label-classes`` without ``--labels`` (one line), or None."""
    for option, value in (("--label-values", getattr(args, "label_values", None)),
                          ("--label-classes", getattr(args, "label_classes", None))):
        if value is not None and args.labels is None:
            return f"{option} goes with --labels DIR (it says which values of those masks are scored)"
    return None


def add_continue_arg(p: argparse.ArgumentParser) -> None:
    """``--continue``: resume a batch (:mod:`covseg.engines.inference.resume`)."""
    p.add_argument("--continue", dest="skip_done", action="store_true",
                   help="resume a batch: keep each volume whose folder in --out already holds a complete result of "
                        "the same request (same input files, model, precision, settings and outputs); compute the "
                        "others")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Which network runs, where and how (batch, precision, flips, compile, threads, size, backend)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", metavar="NAME", help="registered network, freshly initialised (e.g. infnet, unet)")
    group.add_argument("--bundle", metavar="PATH", help="MONAI bundle folder with models/model.pt "
                                                        "(default: the shipped Inf-Net bundle)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights for the bundle's network instead of its models/model.pt: a training run's "
                        "model_final.pt, model_best.pt, model_swa.pt or checkpoint_<epoch>.pt")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per forward pass (default 8)")
    p.add_argument("--no-bf16", action="store_true",
                   help="never use bf16 autocast (default: bf16 only where the device runs it fast)")
    p.add_argument("--tta", action="store_true",
                   help="average each slice's prediction over flips (4x the compute; see docs/benchmarks.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (CPU: with frozen, prepacked weights): about 1.1x the throughput, "
                        "but each run first pays 15-30 s of compiling; pays on long batches only (docs/benchmarks.md)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; use 1 on a busy shared machine)")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="side in pixels each lung slice is resized to for the network (default: the model's, 352 "
                        "for Inf-Net; a multiple of 32; smaller is faster, see docs/benchmarks.md)")
    add_backend_arg(p)


def add_backend_arg(p: argparse.ArgumentParser) -> None:
    """``--backend auto|torch|onnxruntime`` (``covseg infer`` and ``covseg diagnose``)."""
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="run the network with torch or ONNX Runtime (CPU only, fp32; the same masks, 1.2-1.5x "
                        "faster on AVX2 CPUs; exported once into ~/.cache/covseg/onnx; onnxruntime comes with covseg, "
                        "covseg[onnx] is needed only for networks that cannot be traced). Default auto: ONNX Runtime "
                        "for trained weights in fp32 on a CPU (no native bf16); else torch")


def backend_problem(args: argparse.Namespace) -> str | None:
    """Why ``--backend`` cannot apply with the other options (one line), or None."""
    if args.backend == "onnxruntime" and args.device != "cpu":
        return f"--backend onnxruntime runs on the CPU only, not --device {args.device}"
    if args.backend == "onnxruntime" and getattr(args, "compile", False):
        return "--compile compiles the torch network; it does not apply to --backend onnxruntime"
    return None


def weights_problem(args: argparse.Namespace) -> str | None:
    """Why ``--weights`` cannot apply (one line), or None: it needs a bundle's network and a file."""
    weights = getattr(args, "weights", None)
    if weights is None:
        return None
    if getattr(args, "model", None) is not None:
        return "--weights goes with a bundle (--bundle, or the default one), not with --model"
    if not Path(weights).is_file():
        return f"--weights {weights}: not found (give a training run's model_final.pt, model_best.pt or checkpoint)"
    return None


def bundle_kind_problem(option: str, bundle: str | Path | None, wanted: str) -> str | None:
    """Why the bundle given to ``option`` is not there or of the wrong kind (one line), or None.

    ``wanted``: ``"segmentation"`` or ``"classes"``, as ``configs/metadata.json`` states it in
    ``network_data_format.outputs.pred.format``. Read before any model is loaded; a bundle without that field (or
    without metadata) is not judged here. A classifier run as the segmenter, or the other way round, failed every
    volume with an indexing error blamed on the input."""
    if bundle is None:
        return None
    config = Path(bundle) / "configs" / "inference.yaml"
    if not config.is_file():  # as the loader says it, but before the output folder is made
        return f"{config}: not found (is {bundle} a covseg bundle?)"
    import json

    try:
        meta = json.loads((Path(bundle) / "configs" / "metadata.json").read_text(encoding="utf-8"))
        found = meta["network_data_format"]["outputs"]["pred"]["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if found == wanted or found not in _KINDS:
        return None
    return (f"{option} {bundle}: is {_KINDS[found]} bundle (outputs: {found}), where {option} takes "
            f"{_KINDS[wanted]} bundle")


def export_notice(path: Path) -> None:
    """Printed before a network is exported to ONNX (why the first run waits)."""
    print(f"covseg: exporting the network to ONNX once for ONNX Runtime (seconds; a minute or more for a network "
          f"the fast exporter refuses): {path}", file=sys.stderr, flush=True)


def torch_notice(reason: str) -> None:
    """Printed when ``--backend auto`` keeps a network on torch because only the slower exporter takes it."""
    print("covseg: note: --backend auto runs this model on torch, since only the slower ONNX exporter takes it "
          f"({reason}); one run with --backend onnxruntime exports it once, and later runs, auto included, use ONNX "
          "Runtime", file=sys.stderr, flush=True)


def check_model_args(args: argparse.Namespace, apply: bool = True) -> bool:
    """The model options make sense (else one error line and ``False``); ``apply``: sets ``--threads``.

    torch is imported only to apply ``--threads`` and to check ``--device cuda``, so the CLI can check the options
    before it starts reading the first volume, and apply them later."""
    if args.batch_size < 1:
        error(f"--batch-size must be >= 1, got {args.batch_size}")
        return False
    if args.threads is not None and args.threads < 1:
        error(f"--threads must be >= 1, got {args.threads}")
        return False
    if args.image_size is not None and (args.image_size < 64 or args.image_size % 32):
        error(f"--image-size must be a multiple of 32 and at least 64, got {args.image_size}")
        return False
    problem = (backend_problem(args) or weights_problem(args)
               or bundle_kind_problem("--bundle", getattr(args, "bundle", None), "segmentation")
               or bundle_kind_problem("--gate-bundle", getattr(args, "gate_bundle", None), "classes"))
    if problem:
        error(problem)
        return False
    problem = device_problem(args.device) or (compile_problem(args.device) if getattr(args, "compile", False) else None)
    if problem:
        error(problem)
        return False
    if apply and args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return True


def compile_problem(device: str) -> str | None:
    """Why ``--compile`` cannot run on ``device``, in one line, or None: on CPU inductor builds C++ kernels and needs
    a working C++ compiler (checked as inductor finds it: ``$CXX`` or g++ / clang++ on PATH); without one every
    volume would fail at its first batch."""
    if not device.startswith("cpu"):
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler  # imported only for --compile (about a second)

    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - inductor raises its own InvalidCxxCompiler (or OSError)
        return (f"--compile needs a working C++ compiler on CPU (torch.compile builds C++ kernels): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; install g++ or set $CXX, "
                "or run without --compile")
    return None


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be used here, in one line, or None; torch is imported only for a CUDA device."""
    if not device.startswith("cuda"):
        return None if device == "cpu" else f"--device {device}: use cpu or cuda[:N]"
    import torch

    if not torch.cuda.is_available():
        return f"--device {device}: CUDA is not available (torch {torch.__version__})"
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        return f"--device {device}: no such CUDA device ({torch.cuda.device_count()} visible)"
    return None
