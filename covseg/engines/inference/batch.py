"""Data iteration over a batch of volumes: read the next volume, infer the current one, export the previous one.

:func:`run_batch` runs a list of inputs with reading of the next volume and exporting of the previous one
overlapped with compute (one reader and one writer thread), goes on after a failing input, and returns one
:class:`covseg.reports.batch.VolumeResult` per input. Per volume:
:func:`covseg.engines.inference.volume_step.prepare_volume` (inference, the reference label and report), then
:func:`covseg.engines.inference.export.export_volume` (:func:`covseg.engines.inference.volume_step.process_volume`
does both for one volume in the calling thread).

Before the first read, under the output folder's lock (:mod:`covseg.io.outlock`), the leftovers of killed runs
are cleaned (:func:`covseg.io.atomic.clean_leftovers`) and names are claimed (:mod:`covseg.io.naming`): an input
whose name belongs to another input's folder gets a stable ``_<tag>``. Ctrl-C (or SIGTERM, see
:mod:`covseg.engines.inference.interrupts`) stops the batch after the volume being written is complete and raises
:class:`covseg.engines.inference.interrupts.BatchInterrupted` with the finished volumes, for the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from covseg.engines.inference.dataset import VolumeDataset, VolumeItem, check_folders
from covseg.engines.inference.export import export_volume
from covseg.engines.inference.interrupts import BatchInterrupted
from covseg.engines.inference.outputs import ExportOptions, VolumeOutputs
from covseg.engines.inference.pictures_job import warm_pictures
from covseg.engines.inference.predictor_setup import as_predictor
from covseg.engines.inference.resume import earlier_result, volume_request
from covseg.engines.inference.volume import (
    LUNG_MARGIN_MM,
    THRESHOLD,
    Gate,
    Handler,
    InfectionPostprocessing,
    Progress,
)
from covseg.engines.inference.volume_step import prepare_volume
from covseg.io.atomic import clean_leftovers
from covseg.io.errors import CovsegInputError
from covseg.io.naming import claim_names, source_key
from covseg.io.outlock import output_lock
from covseg.io.source import VolumeSource
from covseg.reports.batch import VolumeResult, recorded_sources
from covseg.reports.label_scores import LabelValues

log = logging.getLogger(__name__)

__all__ = ["run_batch"]


def _error_text(exc: BaseException, source: str) -> str:
    if isinstance(exc, CovsegInputError):
        return str(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{source}: {type(exc).__name__}: {text}"[:400]


def _failed(src: VolumeSource, exc: BaseException) -> VolumeResult:
    return VolumeResult(src.name, str(src.path), status="error", error=_error_text(exc, str(src.path)),
                        key=source_key(src))


def _claim(srcs: Sequence[VolumeSource], out_dir: Path) -> dict[str, str]:
    """Clean killed runs' leftovers and claim stable unique names, under the lock; return the recorded owners."""
    with output_lock(out_dir, on_wait=log.warning):
        for line in clean_leftovers(out_dir):
            log.warning(line)
        owners = recorded_sources(out_dir)
        claim_names(srcs, out_dir, owners)
    return owners


def run_batch(sources: Sequence[VolumeSource | str | Path] | VolumeDataset, out_dir: str | Path, model: object,
              labels_dir: str | Path | None = None, *, save_prob: bool = False, gate: Gate | None = None,
              device: str = "cpu", batch_size: int = 8, bf16: bool | str = "auto", image_size: int | None = None,
              tta: bool = False, handlers: Sequence[Handler] = (),
              on_start: Callable[[VolumeSource], None] | None = None,
              on_result: Callable[[VolumeResult], None] | None = None, threshold: float = THRESHOLD,
              lung_margin_mm: float = LUNG_MARGIN_MM, export: ExportOptions | None = None,
              postprocessing: InfectionPostprocessing | None = None, progress: Progress | None = None,
              model_info: dict | None = None, prepare: Callable[..., VolumeOutputs] | None = None,
              skip_done: bool = False, settings: dict | None = None,
              label_values: LabelValues | None = None) -> list[VolumeResult]:
    """Process every volume of ``sources`` into ``out_dir``; never stops early.

    ``sources``: paths / :class:`VolumeSource` (read with :class:`VolumePreprocessing`) or a :class:`VolumeDataset`
    (its ``transform`` is the preprocessing). ``model``: a :class:`covseg.networks.loading.LoadedModel` (its
    ``image_size`` is used unless ``image_size`` is given), an ``nn.Module`` (``image_size`` default 352) or a ready
    :class:`SlicePredictor`; ``tta``: flip averaging (:class:`SlicePredictor`), recorded in each report's ``model``
    entry (``model_info`` adds to that entry); ``export``: which optional outputs to write (default:
    ``ExportOptions(save_prob=save_prob)``). Preprocessing (reading, lung mask) of the next volume and export of the
    previous one run in background threads. ``prepare``: replaces
    :func:`covseg.engines.inference.volume_step.prepare_volume` (same signature, ``lung`` included), e.g. the joint
    diagnosis of :mod:`covseg.engines.inference.diagnose`. ``on_start(source)`` / ``on_result(result)`` are called
    in input order from the calling thread. An unwritable ``out_dir`` raises :class:`CovsegInputError` before
    anything is read. Each report records its ``request`` (:func:`covseg.engines.inference.resume.volume_request`,
    with ``settings``: what else decides the outputs, e.g. the diagnosis thresholds). ``skip_done``: an input whose
    folder already holds a complete result of the same request is neither read nor computed; its result
    (``earlier``) is the one on disk. ``label_values``: which values of the labels are scored (None: every non-zero
    value is infection).
    """
    out_dir = check_folders(out_dir, labels_dir)
    options = export if export is not None else ExportOptions(save_prob=save_prob)
    dataset = sources if isinstance(sources, VolumeDataset) else VolumeDataset(list(sources))
    srcs = dataset.data
    predictor, info = as_predictor(model, image_size, device, batch_size, bf16, tta)
    info = {**info, **(model_info or {})}
    owners = _claim(srcs, out_dir)
    post = postprocessing if postprocessing is not None else InfectionPostprocessing(threshold, lung_margin_mm)
    requests = [volume_request(src, info, options, labels_dir, post, settings, label_values) for src in srcs]
    results: list[VolumeResult | None] = [
        earlier_result(out_dir / src.name, src, request) if skip_done else None
        for src, request in zip(srcs, requests)]
    todo = [i for i, r in enumerate(results) if r is None]
    next_todo = dict(zip(todo, todo[1:]))
    pending: list = []  # at most one (index, future, item): the volume being written

    def finish() -> None:
        index, fut, item = pending[0]
        src = srcs[index]
        try:
            fut.result()
            results[index] = VolumeResult(item.final_dir.name, str(src.path), report=item.report,
                                          out_dir=str(item.final_dir), key=item.key)
        except Exception as exc:  # noqa: BLE001 - one bad output must not stop the batch
            results[index] = _failed(src, exc)
        pending.clear()
        if on_result is not None:
            on_result(results[index])

    interrupted = False
    with ThreadPoolExecutor(1, thread_name_prefix="covseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="covseg-write") as writer:
        next_read = reader.submit(dataset.__getitem__, todo[0]) if todo else None
        if todo and options.figures:
            warm_pictures()  # while the first volume is read
        try:
            for i, src in enumerate(srcs):
                if on_start is not None:
                    on_start(src)
                if results[i] is not None:  # done by an earlier run (skip_done)
                    if on_result is not None:
                        on_result(results[i])
                    continue
                current = next_read
                following = next_todo.get(i)
                next_read = reader.submit(dataset.__getitem__, following) if following is not None else None
                try:
                    loaded: VolumeItem = current.result()
                    loaded.volume.name = src.name  # as claimed (a prefetched volume was read before the claim)
                    item = (prepare or prepare_volume)(
                        loaded.volume, predictor, out_dir, labels_dir=labels_dir, gate=gate, model_info=info,
                        handlers=handlers, threshold=threshold, lung_margin_mm=lung_margin_mm,
                        timing_s=loaded.timing_s, lung=loaded.lung, postprocessing=postprocessing, progress=progress,
                        pictures=options.figures, label_values=label_values)
                    item.key, item.owners = source_key(src), owners
                    item.report.request = requests[i]
                    del loaded
                except Exception as exc:  # noqa: BLE001 - report and go on with the next input
                    log.debug("volume %s failed", src.path, exc_info=True)
                    if pending:
                        finish()
                    results[i] = _failed(src, exc)
                    if on_result is not None:
                        on_result(results[i])
                    continue
                if pending:  # at most one volume waiting to be written: bounded memory
                    finish()
                pending.append((i, writer.submit(export_volume, item, options), item))
            if pending:
                finish()
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: let the volume being written complete, keep what is done
            interrupted = True
            if next_read is not None:
                next_read.cancel()
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C stops waiting for it
                if pending:
                    finish()
    done = [r for r in results if r is not None]
    if interrupted:
        raise BatchInterrupted(done)
    return done
