"""The ``covseg`` command: ``infer`` CT volumes, ``evaluate`` 2D prediction folders, run a ``demo`` on a phantom.

Exit status: 0 everything succeeded; 1 at least one input failed (the others were processed) or evaluation
failed; 2 usage error, unusable model, or an output folder that cannot be written; 130 interrupted.
See docs/cli.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from covseg.reports.batch import VolumeResult

from covseg.synthetic.demo import DEMO_SHAPE

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_INFER_EPILOG = """\
examples:
  covseg infer scan.nii.gz --out results/
  covseg infer scans/ dicom_series/ --out results/ --labels labels/ --save-prob
  covseg infer scan.nii.gz --out results/ --model unet --batch-size 4 --no-bf16
  covseg infer scan.nii.gz --out results/ --bundle bundles/infnet
  covseg infer --out results/        (no INPUT: the built-in chest phantom, as `covseg demo`)

outputs: <out>/<volume>/{infection_mask,lung_mask[,infection_prob][,infection_labels]}.nii.gz,
report.json, slices.csv, montage.png, reformats.png, infection_curve.png[, overlays/][, infection_seg.dcm];
<out>/summary.json, summary.csv and report.html (see docs/reports.md). exit status: 0 all inputs succeeded,
1 some input failed (one 'error: <file>: <reason>' line each; the others are processed), 2 usage error,
unusable model or unwritable --out.
"""
_EVALUATE_EPILOG = """\
examples:
  covseg evaluate predictions/ COVID-SemiSeg/test/masks
  covseg evaluate predictions/ masks/ --json
  covseg evaluate predictions/ masks/ --csv per_image.csv --name Inf-Net

Predictions <stem>.png|jpg (0-255 maps) are matched to masks <stem>.png and scored with the
Inf-Net authors' toolbox conventions; without --json the paper's table row is printed
(Dice, Sen., Spec., S-alpha, E-phi mean, MAE).
"""
_DEMO_EPILOG = """\
examples:
  covseg demo
  covseg demo --out demo_out/ --save-prob

Generates a chest-CT phantom with known lungs and lesions, runs `covseg infer` on it with the default
model (the shipped Inf-Net bundle; an untrained Inf-Net until weights ship: then the infection outputs
are not meaningful, the lung figures are) and scores it against the phantom's true lesions.
"""


# ----------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``covseg`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="covseg",
        description="COVID-19 lung-infection segmentation of chest CT (Inf-Net on MONAI).",
        epilog="examples:\n  covseg demo\n  covseg infer scan.nii.gz --out results/\n"
               "  covseg evaluate predictions/ masks/ --json\n\nrun `covseg COMMAND --help` for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from covseg import __version__

    parser.add_argument("--version", action="version", version=f"covseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    infer = sub.add_parser("infer", help="segment lungs and infection in CT volumes",
                           description="Segment the lungs and COVID-19 infection in CT volumes (NIfTI, MHA, NRRD "
                                       "files or DICOM series; folders are searched).",
                           epilog=_INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("inputs", nargs="*", metavar="INPUT", help="volume files or folders (none: the built-in "
                                                                   "phantom demo)")
    infer.add_argument("--out", "-o", metavar="DIR", help="output folder (required with INPUTs)")
    infer.add_argument("--labels", metavar="DIR", help="reference masks <DIR>/<volume>.nii.gz (>0 = infection): "
                                                       "adds Dice, Sen., Spec., Prec., MAE to the reports")
    _model_args(infer)
    infer.add_argument("--save-prob", action="store_true",
                       help="also write infection_prob.nii.gz (uint8, 255 x probability)")
    _output_args(infer)
    infer.add_argument("--no-progress", action="store_true", help="no progress bar")
    infer.add_argument("--gate", action="store_true",
                       help="skip slices the JCS slice classifier calls infection-free (threshold: the classifier "
                            "bundle's gate_threshold)")
    infer.add_argument("--gate-bundle", metavar="PATH", help="classifier bundle for --gate (default: the shipped "
                                                             "bundles/jcs_classifier)")
    infer.add_argument("--gate-threshold", type=float, metavar="P", help="keep slices with P(COVID-19) >= P")

    evaluate = sub.add_parser("evaluate", help="score 2D prediction maps against masks (paper table row)",
                              description="Score prediction maps against ground-truth masks with the Inf-Net "
                                          "evaluation-toolbox conventions.",
                              epilog=_EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("pred_dir", metavar="PRED_DIR", help="folder of prediction maps (<stem>.png|jpg)")
    evaluate.add_argument("gt_dir", metavar="GT_DIR", help="folder of masks (<stem>.png)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object of all figures")
    evaluate.add_argument("--csv", metavar="FILE", help="write per-image scores to FILE")
    evaluate.add_argument("--name", default=None, help="model name shown in the table row")

    demo = sub.add_parser("demo", help="run inference on a generated chest phantom",
                          description="Generate a chest-CT phantom and run `covseg infer` on it.",
                          epilog=_DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", "-o", metavar="DIR", help="output folder (default: a new temporary folder)")
    _model_args(demo)
    demo.add_argument("--save-prob", action="store_true", help="also write infection_prob.nii.gz")
    demo.add_argument("--phantom-shape", metavar="Z,Y,X", default=",".join(map(str, DEMO_SHAPE)),
                      help="phantom size in voxels (default %(default)s)")
    _output_args(demo)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")

    from covseg.cli import diagnose, label_server  # standard library only: cheap

    label_server.add_parser(sub)
    diagnose.add_parser(sub)
    return parser


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overlays", choices=("none", "infected", "all"), default="none",
                   help="also write one overlay PNG per axial slice into <volume>/overlays/: none (default), the "
                        "slices holding infection, or all slices")
    p.add_argument("--no-figures", action="store_true",
                   help="no pictures (montage, reformats, infection curve, overlays); report.html keeps the tables")
    p.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=None,
                   help="write infection_seg.dcm (DICOM-SEG referencing the source series) for DICOM inputs "
                        "(default: on for DICOM inputs)")


def _model_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", metavar="NAME", help="registered network, freshly initialised (e.g. infnet, unet)")
    group.add_argument("--bundle", metavar="PATH", help="MONAI bundle folder with models/model.pt "
                                                        "(default: the shipped Inf-Net bundle)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per forward pass (default 8)")
    p.add_argument("--no-bf16", action="store_true",
                   help="never use bf16 autocast (default: bf16 only where the device runs it fast)")
    p.add_argument("--tta", action="store_true",
                   help="average each slice's prediction over flips (4x the compute; see docs/benchmarks.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: the first run pays about 45 s, later runs about 4 s (inductor's "
                        "disk cache); pays on long batches only (docs/benchmarks.md)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; use 1 on a busy shared machine)")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="side in pixels each lung slice is resized to for the network (default: the model's, 352 "
                        "for Inf-Net; a multiple of 32; smaller is faster, see docs/benchmarks.md)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="run the network with torch (default) or ONNX Runtime (CPU only; same masks, 1.2-1.5x faster "
                        "on AVX2 CPUs; exported once into ~/.cache/covseg/onnx; needs covseg[onnx])")


# ------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``covseg`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging()
    from covseg.engines.interrupts import quiet_ignite_interrupts, terminate_as_interrupt

    quiet_ignite_interrupts()
    try:
        if args.command == "label-server":  # handles its own SIGTERM (stops the server's process group)
            from covseg.cli.label_server import run

            return run(args)
        with terminate_as_interrupt():  # SIGTERM stops a run the way Ctrl-C does
            if args.command == "infer":
                return _cmd_infer(args)
            if args.command == "evaluate":
                return _cmd_evaluate(args)
            if args.command == "diagnose":
                from covseg.cli.diagnose import run as run_diagnose

                return run_diagnose(args)
            return _cmd_demo(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _setup_logging() -> None:
    root = logging.getLogger("covseg")
    if not any(getattr(h, "_covseg_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._covseg_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    for h in root.handlers:  # main() may run several times in one process (tests, scripts): today's stderr
        if getattr(h, "_covseg_cli", False) and h.stream is not sys.stderr:
            h.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
    logging.getLogger("covseg").handlers[0].setFormatter(_LowerFormatter())


class _LowerFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ infer
def _check_model_args(args: argparse.Namespace, apply: bool = True) -> bool:
    """The model options make sense (else one error line and ``False``); ``apply``: sets ``--threads``.

    torch is imported only to apply ``--threads`` and to check ``--device cuda``, so the CLI can check the options
    before it starts reading the first volume, and apply them later."""
    if args.batch_size < 1:
        _error(f"--batch-size must be >= 1, got {args.batch_size}")
        return False
    if args.threads is not None and args.threads < 1:
        _error(f"--threads must be >= 1, got {args.threads}")
        return False
    if args.image_size is not None and (args.image_size < 64 or args.image_size % 32):
        _error(f"--image-size must be a multiple of 32 and at least 64, got {args.image_size}")
        return False
    if args.backend == "onnxruntime" and args.device != "cpu":
        _error(f"--backend onnxruntime runs on the CPU only, not --device {args.device}")
        return False
    if args.backend == "onnxruntime" and getattr(args, "compile", False):
        _error("--compile compiles the torch network; it does not apply to --backend onnxruntime")
        return False
    if (apply and args.threads is not None) or args.device.startswith("cuda"):
        import torch

        if apply and args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            _error(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
            return False
    return True


def _load(args: argparse.Namespace):
    """The model of ``--model`` / ``--bundle`` / default, or ``None`` after printing one error line."""
    from covseg.networks.loading import load_model

    if not _check_model_args(args):
        return None
    try:
        model = load_model(model=args.model, bundle=args.bundle, device=args.device)
        if args.image_size is not None:
            model.image_size = args.image_size
        if args.backend == "onnxruntime":
            from covseg.engines.onnx_runtime import use_onnx_runtime

            use_onnx_runtime(model, threads=args.threads, on_export=_export_notice)
        return model
    except KeyError as exc:
        _error(str(exc.args[0]) if exc.args else str(exc))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        _error(" ".join(str(exc).split()))
    return None


def _export_notice(path: Path) -> None:
    print(f"covseg: exporting the network to ONNX once (about half a minute): {path}", file=sys.stderr, flush=True)


def _run_infer(inputs: Sequence[str], out: Path, args: argparse.Namespace, labels: str | None) -> int:
    """Load the model, build the bundle's inference workflow with it, run it with a progress bar, print the table.

    The first volume is read and lung-masked in a forked child (:mod:`covseg.engines.dataset`: no torch, no MONAI)
    while this process imports torch and MONAI, parses ``inference.yaml`` with MONAI's ``ConfigParser`` and loads the
    model; the dataset built from the config takes that item over when its ``preprocessing`` is the same."""
    from covseg.engines.dataset import VolumeDataset, VolumePreprocessing, check_folders
    from covseg.io.errors import CovsegInputError

    try:
        check_folders(out, labels)
    except CovsegInputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if not _check_model_args(args, apply=False):
        return EXIT_USAGE
    try:
        found = VolumeDataset(list(inputs), VolumePreprocessing())
    except Exception as exc:  # noqa: BLE001 - one line, as for a config error
        return _config_error(exc)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        found.prefetch(0, process=True)  # read + lung-mask the first volume while torch, MONAI and the model load
    from covseg.engines.batch import inference_config
    from covseg.engines.interrupts import BatchInterrupted
    from covseg.networks.loading import DEFAULT_BUNDLE

    # the bundle's own volume workflow, else (a slice-level bundle, or none) the shipped one with its network
    bundle = Path(args.bundle) if args.bundle else DEFAULT_BUNDLE
    if not _is_volume_workflow(bundle / "configs" / "inference.yaml"):
        bundle = DEFAULT_BUNDLE
    parser = inference_config(bundle / "configs" / "inference.yaml",
                              {"bundle_root": str(bundle), "input_dir": found.data})
    try:
        dataset = parser.get_parsed_content("dataset")
    except Exception as exc:  # noqa: BLE001 - MONAI wraps the cause: show it in one line
        return _config_error(exc)
    dataset.adopt(found)  # the first volume under way, if the config's preprocessing is the same
    model = _load(args)
    if model is None:
        return EXIT_USAGE
    gate = None
    if getattr(args, "gate", False) or getattr(args, "gate_bundle", None):
        from covseg.cli.diagnose import load_gate

        try:
            gate = load_gate(args.gate_bundle or "default", args.gate_threshold, args.device)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
            _error(" ".join(str(exc).split()))
            return EXIT_USAGE
    overrides = {
        "output_dir": str(out),
        "labels_dir": labels, "device": args.device, "batch_size": args.batch_size,
        "precision": "fp32" if args.no_bf16 else "auto", "tta": args.tta, "compile": args.compile,
        "save_prob": args.save_prob,
        "backend": args.backend, "image_size": model.image_size, "network": model.network,
        "export#figures": not args.no_figures, "export#overlays": args.overlays, "export#dicom_seg": args.dicom_seg,
        "model_info": {"name": model.name, "version": model.meta.get("version"), "trained": model.trained},
        "evaluator#meta": {"command": "covseg infer", "inputs": [str(i) for i in inputs]}, "evaluator#gate": gate,
    }
    overrides["dataset"] = dataset  # the same object, whose first volume is being read
    try:
        parser.update(overrides)
        evaluator = parser.get_parsed_content("evaluator")
    except Exception as exc:  # noqa: BLE001 - MONAI wraps the cause: show it in one line
        return _config_error(exc)
    with _progress(len(evaluator.dataset), args.no_progress) as bar:
        evaluator.on_start, evaluator.on_result, evaluator.progress = bar.on_start, bar.on_result, bar.on_batch
        try:
            results = evaluator.run()
        except CovsegInputError as exc:  # e.g. a full disk for the summary: the finished volume folders are kept
            bar.close()
            if evaluator.results:
                from covseg.reports.batch import format_console_table

                print(format_console_table(evaluator.results))
            _error(str(exc))
            return EXIT_USAGE
        except BatchInterrupted as stop:  # every process merged its finished volumes into the summary
            bar.close()
            n_ok = sum(r.ok for r in stop.results)
            _error(f"interrupted: {n_ok} volume(s) finished before it are complete in {out}/ (summary.json)")
            return EXIT_INTERRUPTED
    return _finish_infer(results, out, evaluator.is_main, evaluator.seconds)


def _is_volume_workflow(config: Path) -> bool:
    """Whether a bundle's inference config is covseg's volume workflow (its evaluator a VolumeBatchInference)."""
    if not config.is_file():
        return False
    import yaml

    try:
        target = (yaml.safe_load(config.read_text()) or {}).get("evaluator", {}).get("_target_", "")
    except (yaml.YAMLError, AttributeError, OSError):
        return False
    return str(target).endswith("VolumeBatchInference")


def _config_error(exc: BaseException) -> int:
    """One error line for a failure while building the workflow from the config (MONAI wraps the cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    _error(" ".join(str(exc).split()) or type(exc).__name__)
    return EXIT_USAGE


class _progress:
    """A tqdm bar over volumes whose postfix shows the current volume and slice batch."""

    def __init__(self, total: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="vol", desc="covseg", disable=disable or None, file=sys.stderr,
                        dynamic_ncols=True)
        self.name = ""

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()

    def on_start(self, src) -> None:
        self.name = src.name
        self.bar.set_postfix_str(src.name, refresh=True)

    def on_batch(self, done: int, total: int) -> None:
        self.bar.set_postfix_str(f"{self.name}: slice batch {done}/{total}", refresh=True)

    def on_result(self, result) -> None:
        if not result.ok:
            self.bar.write(f"error: {result.error}", file=sys.stderr)
        self.bar.update(1)


def _finish_infer(results: list[VolumeResult], out: Path, is_main: bool, seconds: float) -> int:
    """Rank 0 (or the only process) prints the table (the summary is written); other ranks just exit."""
    from covseg.reports.batch import format_console_table

    if not is_main:
        return EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK
    if results:
        print(format_console_table(results))
    n_failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - n_failed} of {len(results)} volume(s) done in {seconds:.1f} s; "
          f"outputs in {out}/ (summary.json, summary.csv, report.html)")
    if not results:
        _error("no input volume")
        return EXIT_FAILED
    return EXIT_FAILED if n_failed else EXIT_OK


def _cmd_infer(args: argparse.Namespace) -> int:
    if not args.inputs:
        print("covseg infer: no INPUT given: running the built-in chest phantom demo", file=sys.stderr)
        args.phantom_shape = ",".join(map(str, DEMO_SHAPE))
        return _cmd_demo(args)
    if args.out is None:
        _error("--out DIR is required with INPUTs (see covseg infer --help)")
        return EXIT_USAGE
    return _run_infer(args.inputs, Path(args.out), args, args.labels)


# ------------------------------------------------------------------------------------------------- demo
def _parse_shape(text: str) -> tuple[int, int, int] | None:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        return None
    return shape if len(shape) == 3 and min(shape) >= 1 else None  # type: ignore[return-value]


def _cmd_demo(args: argparse.Namespace) -> int:
    from covseg.io.errors import CovsegInputError
    from covseg.synthetic.demo import write_demo_input

    shape = _parse_shape(args.phantom_shape)
    if shape is None or min(shape[1:]) < 16:
        _error(f"--phantom-shape {args.phantom_shape!r}: expected Z,Y,X with Y, X >= 16")
        return EXIT_USAGE
    import tempfile

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="covseg-demo-"))
    try:
        ct, labels = write_demo_input(out / "demo", shape)
    except CovsegInputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    print(f"demo: chest phantom {shape[2]}x{shape[1]}x{shape[0]} written to {ct} (true lesions in {labels}/)",
          file=sys.stderr)
    code = _run_infer([str(ct)], out, args, str(labels))
    print(f"demo: masks and report in {out / 'phantom'}/ ; input phantom in {ct.parent}/")
    return code


# --------------------------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from covseg.io.atomic import atomic_write_text
    from covseg.io.errors import CovsegInputError
    from covseg.metrics.toolbox import evaluate_folders, format_table_row, per_image_csv_text

    try:
        figures = evaluate_folders(args.pred_dir, args.gt_dir)
    except ValueError as exc:
        _error(" ".join(str(exc).split()))
        return EXIT_FAILED
    per_image = figures.pop("per_image", [])
    if args.csv:
        try:
            atomic_write_text(args.csv, per_image_csv_text(per_image))
        except (CovsegInputError, OSError) as exc:
            _error(str(exc))
            return EXIT_USAGE
    if args.json:
        import json

        print(json.dumps({k: (float(v) if isinstance(v, float) else v) for k, v in figures.items()}, indent=2))
    else:
        print(format_table_row(figures, name=args.name))
        print(f"({figures.get('n_images', len(per_image))} images)")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

