"""``covseg infer``: segment lungs and infection in CT volumes, thin over the bundle's inference workflow
(:class:`covseg.engines.inference.evaluator.VolumeBatchInference`, built from ``inference.yaml`` by MONAI's
``ConfigParser``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from covseg.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    config_error,
    empty_folder_option,
    error,
    non_finite_option,
    one_line,
    read_first_ahead,
)
from covseg.cli.options import (
    add_continue_arg,
    add_label_args,
    add_model_args,
    add_output_args,
    check_model_args,
    export_notice,
    label_args_problem,
    torch_notice,
)
from covseg.cli.progress import VolumeProgress

if TYPE_CHECKING:
    from covseg.engines.inference.evaluator import VolumeBatchInference

__all__ = ["add_parser", "load_model_of", "run", "run_infer"]

_EPILOG = """\
examples:
  covseg infer scan.nii.gz --out results/
  covseg infer scans/ dicom_series/ --out results/ --labels labels/ --save-prob
  covseg infer scans/ --out results/ --labels lung-and-infection-labels/ --label-values 3
  covseg infer scan.nii.gz --out results/ --model unet --batch-size 4 --no-bf16
  covseg infer scan.nii.gz --out results/ --bundle bundles/infnet
  covseg infer --out results/        (no INPUT: the built-in chest phantom, as `covseg demo`)

outputs: <out>/<volume>/{infection_mask,lung_mask[,infection_prob][,infection_labels]}.nii.gz,
report.json, slices.csv, montage.png, reformats.png, infection_curve.png[, overlays/]
[, infection_seg.dcm, infection_sr.dcm]; <out>/summary.json, summary.csv and report.html (see docs/reports.md).
exit status: 0 all inputs succeeded, 1 some input failed (one 'error: <file>: <reason>' line each; the others
are processed), 2 usage error, unusable model or unwritable --out.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``infer`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("infer", help="segment lungs and infection in CT volumes",
                       description="Segment the lungs and COVID-19 infection in CT volumes (NIfTI, MHA, NRRD "
                                   "files or DICOM series; folders are searched).",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="volume files or folders (none: the built-in "
                                                               "phantom demo)")
    p.add_argument("--out", "-o", metavar="DIR", help="output folder (required with INPUTs)")
    add_label_args(p)
    add_model_args(p)
    p.add_argument("--save-prob", action="store_true",
                   help="also write infection_prob.nii.gz (uint8, 255 x probability)")
    add_output_args(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (without a terminal: no progress: line per volume)")
    add_continue_arg(p)
    p.add_argument("--gate", action="store_true",
                   help="skip slices the JCS slice classifier calls infection-free (threshold: the classifier "
                        "bundle's gate_threshold)")
    p.add_argument("--gate-bundle", metavar="PATH", help="classifier bundle for --gate (default: the shipped "
                                                         "bundles/jcs_classifier)")
    p.add_argument("--gate-threshold", type=float, metavar="P", help="keep slices with P(COVID-19) >= P")


def run(args: argparse.Namespace) -> int:
    """``covseg infer`` with parsed ``args``; no INPUT runs the demo."""
    problem = (empty_folder_option("infer", out=args.out, labels=args.labels)
               or non_finite_option(gate_threshold=getattr(args, "gate_threshold", None))
               or label_args_problem(args))
    if problem:
        error(problem)
        return EXIT_USAGE
    if not args.inputs:
        from covseg.cli import demo

        print("covseg infer: no INPUT given: running the built-in chest phantom demo", file=sys.stderr)
        args.phantom_shape = ",".join(map(str, demo.DEMO_SHAPE))
        return demo.run(args)
    if args.out is None:
        error("--out DIR is required with INPUTs (see covseg infer --help)")
        return EXIT_USAGE
    return run_infer(args.inputs, Path(args.out), args, args.labels)


def load_model_of(args: argparse.Namespace):
    """The model of ``--model`` / ``--bundle`` / default on its backend, or ``None`` after printing one error line."""
    from covseg.engines.runtime.backend_model import load_backend_model

    if not check_model_args(args):
        return None
    try:
        return load_backend_model(model=args.model, bundle=args.bundle, weights=getattr(args, "weights", None),
                                  device=args.device, backend=args.backend,
                                  image_size=args.image_size, threads=args.threads,
                                  precision="fp32" if args.no_bf16 else "auto", compiled=args.compile,
                                  on_export=export_notice, on_torch=torch_notice)
    except KeyError as exc:
        error(str(exc.args[0]) if exc.args else str(exc))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        error(one_line(exc))
    return None


def run_infer(inputs: Sequence[str], out: Path, args: argparse.Namespace, labels: str | None) -> int:
    """Load the model, build the bundle's inference workflow with it, run it with a progress bar, print the table.

    The first volume is read and lung-masked in a forked child (:mod:`covseg.engines.inference.dataset`: no torch, no
    MONAI) while this process imports torch and MONAI, parses ``inference.yaml`` with MONAI's ``ConfigParser`` and
    loads the model; the dataset built from the config takes that item over when its ``preprocessing`` is the same."""
    from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing, check_folders
    from covseg.io.errors import CovsegInputError

    if not check_model_args(args, apply=False):  # before the output folder is made: a usage error leaves nothing
        return EXIT_USAGE
    try:
        check_folders(out, labels)
    except CovsegInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    try:
        found = VolumeDataset(list(inputs), VolumePreprocessing())
    except Exception as exc:  # noqa: BLE001 - one line, as for a config error
        return config_error(exc)
    read_first_ahead(found, out, getattr(args, "skip_done", False))  # while torch, MONAI and the model load
    from covseg.monai_import import import_monai

    import_monai()  # before any module that imports MONAI: about 0.8 s sooner to the first slice
    from covseg.engines.inference.evaluator import inference_config
    from covseg.engines.inference.interrupts import BatchInterrupted
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
        return config_error(exc)
    dataset.adopt(found)  # the first volume under way, if the config's preprocessing is the same
    model = load_model_of(args)
    if model is None:
        return EXIT_USAGE
    gate = None
    if (getattr(args, "gate", False) or getattr(args, "gate_bundle", None)
            or getattr(args, "gate_threshold", None) is not None):  # either option alone asks for the gate
        from covseg.cli.diagnose import load_gate

        try:
            gate = load_gate(args.gate_bundle or "default", args.gate_threshold, args.device, args.backend,
                             args.threads)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
            error(one_line(exc))
            return EXIT_USAGE
    from covseg.engines.runtime.backend_model import weights_info
    from covseg.reports.label_scores import LabelValues

    overrides = {
        "output_dir": str(out),
        "labels_dir": labels, "device": args.device, "batch_size": args.batch_size,
        "precision": "fp32" if args.no_bf16 else "auto", "tta": args.tta, "compile": args.compile,
        "save_prob": args.save_prob, "skip_done": getattr(args, "skip_done", False),
        "backend": "torch", "image_size": model.image_size,  # the backend is applied: model.network is the one to run
        "network": model.network,
        "export#figures": not args.no_figures, "export#overlays": args.overlays, "export#dicom_seg": args.dicom_seg,
        "model_info": {"name": model.name, "version": model.meta.get("version"), "trained": model.trained,
                       **weights_info(getattr(args, "weights", None))},
        "evaluator#meta": {"command": "covseg infer", "inputs": [str(i) for i in inputs]}, "evaluator#gate": gate,
        # the evaluator's own, not the config's label_values / label_classes: a volume-workflow config without them
        # would drop the values, and the values a config may hold do not apply to --labels given or not
        "evaluator#label_values": LabelValues.from_config(getattr(args, "label_values", None),
                                                          getattr(args, "label_classes", None)),
    }
    overrides["dataset"] = dataset  # the same object, whose first volume is being read
    try:
        parser.update(overrides)
        evaluator = parser.get_parsed_content("evaluator")
    except Exception as exc:  # noqa: BLE001 - MONAI wraps the cause: show it in one line
        return config_error(exc)
    with VolumeProgress(len(evaluator.dataset), args.no_progress) as bar:
        evaluator.on_start, evaluator.on_result, evaluator.progress = bar.on_start, bar.on_result, bar.on_batch
        try:
            evaluator.run()
        except CovsegInputError as exc:  # e.g. a full disk for the summary: the finished volume folders are kept
            bar.close()
            if evaluator.results:
                from covseg.reports.batch import format_console_table

                print(format_console_table(evaluator.results))
            error(str(exc))
            return EXIT_USAGE
        except BatchInterrupted as stop:  # every process merged its finished volumes into the summary
            bar.close()
            n_ok = sum(r.ok for r in stop.results)
            error(f"interrupted: {n_ok} volume(s) finished before it are complete in {out}/ (summary.json)")
            return EXIT_INTERRUPTED
    return _finish(evaluator)


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


def _finish(evaluator: VolumeBatchInference) -> int:
    """Rank 0 (or the only process) prints the table (the summary is written); other ranks just exit."""
    results = evaluator.results
    n_failed = sum(not r.ok for r in results)
    evaluator.print_outcome()  # the table and the count line, on rank 0 only (as the bundle's inference run)
    if not evaluator.is_main:
        return EXIT_FAILED if n_failed else EXIT_OK
    if not results:
        error("no input volume")
        return EXIT_FAILED
    return EXIT_FAILED if n_failed else EXIT_OK
