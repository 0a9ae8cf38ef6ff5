"""``covseg diagnose``: joint classification and segmentation of CT volumes (JCS), thin over
:mod:`covseg.engines.inference.diagnose` and :func:`covseg.engines.inference.batch.run_batch` (one error line per bad
input, the batch goes on, no partial output folder)."""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import asdict
from pathlib import Path

from covseg.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    empty_folder_option,
    error,
    non_finite_option,
    one_line,
    read_first_ahead,
)
from covseg.cli.options import (
    add_backend_arg,
    add_continue_arg,
    add_label_args,
    backend_problem,
    bundle_kind_problem,
    device_problem,
    export_notice,
    label_args_problem,
    torch_notice,
)
from covseg.cli.progress import VolumeProgress
from covseg.options import fraction_problem

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DEFAULT_CLASSIFIER = REPO_BUNDLES / "jcs_classifier"
DEFAULT_SEGMENTER = REPO_BUNDLES / "infnet"

_EPILOG = """\
outputs per volume in DIR/<name>/: diagnosis.json (decision: positive, negative or indeterminate; positive-slice
count, thresholds, per-slice P(COVID-19), infection volume), activation_montage.png (activation maps over the
strongest slices),
infection_mask.nii.gz (empty for negative patients: they are not segmented), lung_mask.nii.gz, report.json,
slices.csv, and for segmented patients the infection pictures (montage.png, reformats.png, infection_curve.png);
DIR/summary.json, summary.csv and report.html (every volume's decision, activation montage and pictures).

examples:
  covseg diagnose scan.nii.gz --out results/
  covseg diagnose ct_folder/ --out results/ --segmenter bundles/jcs_segmenter
  covseg diagnose scans/ --out results/ --labels lung-and-infection-labels/ --label-values 3

with --labels, each volume's infection mask is scored against its reference (report.json metrics, summary.csv):
a negative patient's mask is empty, so a missed infected patient scores Dice 0 and Sen. 0.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diagnose`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("diagnose", help="classify CT volumes as COVID-19 or not, segment the positive ones (JCS)",
                       description="Joint diagnosis (JCS): classify every lung slice, decide the patient, segment "
                                   "only positive patients, explain with activation maps.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="volume files or folders")
    p.add_argument("--out", "-o", metavar="DIR", required=True, help="output folder")
    p.add_argument("--classifier", metavar="PATH", default=str(DEFAULT_CLASSIFIER),
                   help="classifier bundle (default: the shipped jcs_classifier)")
    p.add_argument("--segmenter", metavar="PATH", default=str(DEFAULT_SEGMENTER),
                   help="segmentation bundle for positive patients (default: the shipped Inf-Net)")
    add_label_args(p)
    p.add_argument("--slice-threshold", type=float, metavar="P",
                   help="a slice is positive at P(COVID-19) >= P (default: the classifier bundle's)")
    p.add_argument("--patient-threshold", type=float, metavar="F",
                   help="a patient is positive when more than F x lung slices are positive (default: the bundle's)")
    p.add_argument("--min-lung-fraction", type=float, metavar="F",
                   help="classify only slices whose lung box is at least F x the volume's largest (default: the "
                        "bundle's, 0.25; 0: every lung slice)")
    p.add_argument("--min-lung-area", type=float, metavar="CM2",
                   help="the decision is INDETERMINATE (and the patient segmented) when no slice shows this much "
                        "lung, both lungs in cm² (default: the bundle's, 120; an abdominal CT's lung bases show less; "
                        "0: never)")
    p.add_argument("--segment-gate", type=float, metavar="P",
                   help="segment only the slices of positive (or indeterminate) patients with P(COVID-19) >= P "
                        "(default: all)")
    p.add_argument("--no-figures", action="store_true",
                   help="no infection pictures for segmented patients (the activation montage is always written)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per forward pass (default 8)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    add_backend_arg(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (without a terminal: no progress: line per volume)")
    add_continue_arg(p)


def run(args: argparse.Namespace) -> int:
    """Run the joint diagnosis; exit 0 when every volume is done, 1 when some failed, 2 on usage errors.

    As in ``covseg infer``, the first volume is read and lung-masked in a forked child while torch, MONAI and the
    two models load (:func:`covseg.cli.common.read_first_ahead`)."""
    from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing, check_folders
    from covseg.io.errors import CovsegInputError

    out = Path(args.out)
    problem = (empty_folder_option("diagnose", out=args.out, labels=args.labels) or label_args_problem(args)
               or _usage_problem(args))
    if problem:
        error(problem)
        return EXIT_USAGE
    try:
        check_folders(out, args.labels)
        found = VolumeDataset(list(args.inputs), VolumePreprocessing())
    except CovsegInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    read_first_ahead(found, out, args.skip_done)
    import torch

    from covseg.monai_import import import_monai

    import_monai()  # before any module that imports MONAI (covseg.monai_import)
    from covseg.engines.inference.batch import run_batch
    from covseg.engines.inference.diagnose import (
        DiagnosisSettings,
        make_diagnose_prepare,
        write_diagnosis,
        write_segmented_figures,
    )
    from covseg.engines.inference.interrupts import BatchInterrupted
    from covseg.engines.inference.outputs import ExportOptions
    from covseg.engines.inference.slice_scorer import SliceScorer
    from covseg.engines.runtime.backend_model import load_backend_model, scoring_runtime
    from covseg.networks.loading import load_bundle
    from covseg.reports.batch import format_console_table, outcome_line, write_batch_report
    from covseg.reports.diagnosis import decision_lines
    from covseg.reports.html import write_html_report
    from covseg.reports.label_scores import LabelValues

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        classifier = load_bundle(args.classifier, args.device)
        scoring = scoring_runtime(classifier, args.backend, args.device, args.threads)
        segmenter = load_backend_model(bundle=args.segmenter, device=args.device, backend=args.backend,
                                       threads=args.threads, on_export=export_notice, on_torch=torch_notice)
    except (FileNotFoundError, ValueError, RuntimeError, OSError, KeyError) as exc:
        error(one_line(exc))
        return EXIT_USAGE
    settings = DiagnosisSettings.from_bundle(
        classifier.meta, slice_threshold=args.slice_threshold, patient_threshold=args.patient_threshold,
        min_lung_fraction=args.min_lung_fraction, min_lung_area_cm2=args.min_lung_area, segment_gate=args.segment_gate)
    writers = (write_diagnosis,) if args.no_figures else (write_diagnosis, write_segmented_figures)
    scorer = SliceScorer(classifier.network, classifier.image_size, args.device, args.batch_size, bf16="auto",
                         scoring=scoring)
    classifier_info = {"name": classifier.name, "version": classifier.meta.get("version"),
                       "image_size": classifier.image_size, "precision": "bf16" if scorer.bf16 else "fp32",
                       "backend": scorer.backend}
    values = LabelValues.from_config(args.label_values, args.label_classes)
    bar = VolumeProgress(len(found), args.no_progress, desc="covseg diagnose")
    run_meta = {"command": "covseg diagnose", "inputs": [str(i) for i in args.inputs], "out": str(out),
                "classifier": str(args.classifier), "segmenter": str(args.segmenter),
                "settings": asdict(settings), "labels": args.labels,
                "label_values": None if values is None else asdict(values)}
    t0 = time.perf_counter()
    try:
        results = run_batch(found, out, segmenter, args.labels, device=args.device, batch_size=args.batch_size,
                            on_start=bar.on_start, on_result=bar.on_result, progress=bar.on_batch,
                            export=ExportOptions(writers=writers),
                            model_info={"classifier": classifier_info}, settings=asdict(settings),
                            prepare=make_diagnose_prepare(scorer, settings), skip_done=args.skip_done,
                            label_values=values)
    except CovsegInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    except BatchInterrupted as stop:  # the finished volumes go into the summary, as with covseg infer
        results = stop.results
        with contextlib.suppress(KeyboardInterrupt, CovsegInputError):
            write_batch_report(results, out, {**run_meta, "seconds": round(time.perf_counter() - t0, 3),
                                              "interrupted": True})
        error(f"interrupted: {sum(r.ok for r in results)} volume(s) finished before it are complete in {out}/ "
              "(summary.json)")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    run_meta["seconds"] = round(time.perf_counter() - t0, 3)
    try:
        write_batch_report(results, out, run_meta)
        write_html_report(out, run_meta)
    except CovsegInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    if results:
        print(format_console_table(results))
    for line in decision_lines(results):
        print(line)
    n_failed = sum(not r.ok for r in results)
    print(f"\n{outcome_line(results, out, 'diagnosed')}")
    if not results:
        error("no input volume")
        return EXIT_FAILED
    return EXIT_FAILED if n_failed else EXIT_OK


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Why the options cannot run (one line), or None; imports torch only to check a CUDA device."""
    if args.batch_size < 1:
        return f"--batch-size must be >= 1, got {args.batch_size}"
    problem = non_finite_option(slice_threshold=args.slice_threshold, patient_threshold=args.patient_threshold,
                                segment_gate=args.segment_gate)
    if problem:
        return problem
    problem = fraction_problem(True, slice_threshold=args.slice_threshold, patient_threshold=args.patient_threshold,
                               segment_gate=args.segment_gate, min_lung_fraction=args.min_lung_fraction)
    if problem:
        return problem
    if args.min_lung_area is not None and not args.min_lung_area >= 0.0:
        return f"--min-lung-area must be >= 0 cm², got {args.min_lung_area}"
    return (bundle_kind_problem("--classifier", args.classifier, "classes")
            or bundle_kind_problem("--segmenter", args.segmenter, "segmentation")
            or device_problem(args.device) or backend_problem(args))


def load_gate(bundle: str, threshold: float | None = None, device: str = "cpu", backend: str = "auto",
              threads: int | None = None):
    """``covseg infer --gate``: a :class:`covseg.engines.inference.slice_scorer.ClassifierGate` from a classifier bundle
    (``"default"``: the shipped one), its threshold from ``threshold`` or the bundle's ``gate_threshold``, scoring
    on ``backend`` (as ``--backend`` says)."""
    from covseg.engines.inference.slice_scorer import ClassifierGate, SliceScorer
    from covseg.engines.runtime.backend_model import scoring_runtime
    from covseg.networks.loading import load_bundle

    classifier = load_bundle(DEFAULT_CLASSIFIER if bundle == "default" else bundle, device)
    limit = threshold if threshold is not None else classifier.meta.get("gate_threshold", 0.31)
    scorer = SliceScorer(classifier.network, classifier.image_size, device, bf16="auto",
                         scoring=scoring_runtime(classifier, backend, device, threads))
    return ClassifierGate(scorer, float(limit), name=classifier.name, version=classifier.meta.get("version"))
