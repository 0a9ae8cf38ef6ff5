"""The inference workflow's ``evaluator``: every volume of a dataset through
:func:`covseg.engines.inference.batch.run_batch`, then the batch summary; and the bundle config it is built from
(:func:`inference_config`, :func:`evaluator_from_config`), as ``python -m monai.bundle run inference`` and ``covseg
infer`` build it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from covseg.engines.inference.batch import run_batch
from covseg.engines.inference.dataset import VolumeDataset, check_folders
from covseg.engines.inference.interrupts import BatchInterrupted
from covseg.engines.inference.outputs import ExportOptions
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.inference.predictor_setup import predictor_info
from covseg.engines.inference.volume import Gate, Handler, InfectionPostprocessing, Progress
from covseg.io.source import VolumeSource
from covseg.reports.batch import VolumeResult
from covseg.reports.label_scores import LabelValues

__all__ = ["VolumeBatchInference", "evaluator_from_config", "inference_config", "print_failure"]


class VolumeBatchInference:
    """The inference workflow's ``evaluator``: :func:`run_batch` over a :class:`VolumeDataset` with an
    ``inferer`` (:class:`SlicePredictor`) and ``postprocessing``, then ``summary.json``/``summary.csv``.

    Under ``torchrun`` each rank takes a share of the volumes and rank 0 writes the combined summary
    (:mod:`covseg.engines.inference.distributed`). ``on_start``, ``on_result``, ``progress`` and ``handlers`` may be set
    before :meth:`run` (the CLI's progress bar); by default ``on_result`` prints one ``error:`` line to stderr for
    each volume that fails. After :meth:`run`, ``results``, ``is_main`` and ``seconds`` hold the outcome;
    :meth:`exit_if_failed` turns failures into the process's exit status (the bundle's ``inference`` run).
    ``skip_done``: keep the volumes whose folders already hold a complete result of the same request
    (:mod:`covseg.engines.inference.resume`). ``prepare`` and ``settings``: another per-volume step for
    :func:`run_batch` and the settings its requests record (the joint diagnosis of the classifier bundle's
    ``inference.yaml``: :func:`covseg.engines.inference.diagnose.make_diagnose_prepare`). ``label_values``: which
    values of the labels in ``labels_dir`` are scored (``covseg infer --label-values`` / ``--label-classes``, the
    bundle's ``label_values`` / ``label_classes``: :meth:`LabelValues.from_config`); given without ``labels_dir``,
    a one-line ``ValueError``. ``summary.json`` records them as ``label_values``.
    """

    def __init__(self, dataset: VolumeDataset, inferer: SlicePredictor, output_dir: str | Path, *,
                 labels_dir: str | Path | None = None, postprocessing: InfectionPostprocessing | None = None,
                 export: ExportOptions | None = None, model_info: dict | None = None, gate: Gate | None = None,
                 handlers: Sequence[Handler] = (), meta: dict | None = None, summary: bool = True,
                 skip_done: bool = False, prepare: Callable | None = None, settings: dict | None = None,
                 label_values: LabelValues | None = None) -> None:
        if label_values is not None and labels_dir is None:
            raise ValueError(f"label values {_given(label_values)} go with labels_dir (they say which values of its "
                             "masks are scored)")
        self.dataset, self.inferer, self.output_dir = dataset, inferer, Path(output_dir)
        self.labels_dir, self.label_values = labels_dir, label_values
        self.postprocessing = postprocessing if postprocessing is not None else InfectionPostprocessing()
        self.export = export if export is not None else ExportOptions()
        self.model_info = {**(model_info or {}), **predictor_info(inferer)}
        if gate is not None and hasattr(gate, "describe"):  # e.g. covseg infer --gate: which classifier, threshold
            self.model_info["gate"] = gate.describe()
        self.gate, self.handlers, self.meta, self.summary = gate, list(handlers), dict(meta or {}), summary
        self.skip_done = bool(skip_done)
        self.prepare, self.settings = prepare, settings
        self.on_start: Callable[[VolumeSource], None] | None = None
        self.on_result: Callable[[VolumeResult], None] | None = print_failure
        self.progress: Progress | None = None
        self.results: list[VolumeResult] = []
        self.is_main = True
        self.processes = 1
        self.seconds = 0.0

    def run(self) -> list[VolumeResult]:
        """Process this process's share of the dataset; on the main process, write the summary; return all results.

        Ctrl-C / SIGTERM: each process merges the volumes it finished into the summary (``"interrupted": true``),
        then :class:`BatchInterrupted` propagates.
        """
        from covseg.engines.inference.distributed import shard_from_env

        t0 = time.perf_counter()
        check_folders(self.output_dir, self.labels_dir)
        shard = shard_from_env()
        self.is_main, self.processes = shard.is_main, shard.world
        mine = (self.dataset if shard.world == 1
                else VolumeDataset(shard.take(self.dataset.data), self.dataset.transform))
        try:
            results = run_batch(mine, self.output_dir, self.inferer, self.labels_dir, gate=self.gate,
                                handlers=self.handlers, on_start=self.on_start, on_result=self.on_result,
                                export=self.export, postprocessing=self.postprocessing, progress=self.progress,
                                model_info=self.model_info, skip_done=self.skip_done, prepare=self.prepare,
                                settings=self.settings, label_values=self.label_values)
        except BatchInterrupted as stop:
            self.results, self.seconds = stop.results, time.perf_counter() - t0
            if self.summary:
                with contextlib.suppress(KeyboardInterrupt):
                    self.write_summary(interrupted=True)
            raise
        try:
            self.results = shard.gather(results, len(self.dataset.data))
            self.seconds = time.perf_counter() - t0
            if shard.is_main and self.summary:
                self.write_summary()
        finally:
            shard.close()
        return self.results

    def print_outcome(self) -> None:
        """Print the last :meth:`run`'s table and its one-line count on the main process (as ``covseg infer``
        does; the bundle's ``inference`` run); for a joint diagnosis also each volume's decision line under the
        table, as ``covseg diagnose`` prints them."""
        from covseg.reports.batch import format_console_table, outcome_line
        from covseg.reports.diagnosis import decision_lines

        if self.is_main:
            decisions = decision_lines(self.results)
            table = f"{format_console_table(self.results)}\n" if self.results else ""
            table += "".join(f"{line}\n" for line in decisions) + ("\n" if self.results else "")
            verb = "diagnosed" if decisions else "done"
            print(f"{table}{outcome_line(self.results, self.output_dir, verb, seconds=self.seconds)}", flush=True)

    def exit_if_failed(self) -> None:
        """Exit the process with status 1 and a one-line count when any volume of the last :meth:`run` failed (each
        failure was printed as it happened); nothing when all succeeded. For ``python -m monai.bundle run
        inference``, whose own exit status would otherwise be 0 (``covseg infer`` counts failures itself)."""
        failed = [r for r in self.results if not r.ok]
        if failed:
            rest = ("the others are complete in" if len(failed) < len(self.results) else "listed in")
            raise SystemExit(f"error: {len(failed)} of {len(self.results)} volume(s) failed; {rest} "
                             f"{self.output_dir}/ (summary.json)")

    def write_summary(self, interrupted: bool = False) -> None:
        """``summary.json`` / ``summary.csv`` (merged with earlier runs' into the same folder) and, unless
        ``interrupted``, ``report.html``, for :attr:`results`."""
        from covseg.reports.batch import write_batch_report

        meta = {"command": "covseg infer", "out": str(self.output_dir), **self.meta, "model": self.model_info,
                "labels": None if self.labels_dir is None else str(self.labels_dir),
                "label_values": None if self.label_values is None else dataclasses.asdict(self.label_values),
                "seconds": round(self.seconds, 3), "processes": self.processes}
        if interrupted:
            write_batch_report(self.results, self.output_dir, {**meta, "interrupted": True})
            return
        from covseg.reports.html import write_html_report

        write_batch_report(self.results, self.output_dir, meta)
        write_html_report(self.output_dir, meta)


def _given(values: LabelValues) -> str:
    """How ``values`` were given, for a message: ``label_classes [3, 4]`` or ``label_values [3]``."""
    return f"label_classes {list(values.classes)}" if values.classes is not None else \
        f"label_values {list(values.infection or ())}"


def print_failure(result: VolumeResult) -> None:
    """The default ``on_result``: one ``error: <file>: <reason>`` line on stderr for a volume that failed."""
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr, flush=True)


def inference_config(config_file: str | Path, overrides: dict | None = None):
    """A ``monai.bundle.ConfigParser`` of a bundle's inference config with ``overrides`` (id -> value; values may
    be objects): :func:`evaluator_from_config` and the CLI build their objects from it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update(overrides or {})
    return parser


def evaluator_from_config(config_file: str | Path, overrides: dict | None = None) -> VolumeBatchInference:
    """The ``evaluator`` of a bundle's inference config (with ``overrides``), exactly as
    ``python -m monai.bundle run inference`` builds it."""
    return inference_config(config_file, overrides).get_parsed_content("evaluator")
