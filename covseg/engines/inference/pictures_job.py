"""A volume's pictures drawn off the main thread: :func:`start_pictures` draws them (:func:`draw_pictures`, PNG
bytes) in a thread of their own from the end of the volume's inference on, while its report is built and its masks
are written; :func:`warm_pictures` imports their modules while :func:`covseg.engines.inference.batch.run_batch`
waits for its first volume. The files are written by :func:`covseg.engines.inference.outputs.write_figures`.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from covseg.engines.inference.volume import VolumeInference
from covseg.io.read import CTVolume
from covseg.reports.volume import class_columns

__all__ = ["CURVE", "draw_pictures", "start_pictures", "warm_pictures"]


CURVE = "infection_curve.png"
"""The curve's file name: its key in :func:`draw_pictures`' result."""


def draw_pictures(volume: CTVolume, result: VolumeInference, rows: list[dict]) -> dict[str, bytes]:
    """PNG bytes by file name: ``montage.png``, ``reformats.png`` and ``infection_curve.png`` (a volume of too few
    slices, :func:`covseg.reports.picks.through_plane_views`, gets the montage only)."""
    from covseg.reports.curves import infection_curve_png  # matplotlib: imported only when pictures are made
    from covseg.reports.picks import through_plane_views
    from covseg.reports.pictures.volume_figures import volume_figure_pngs

    pngs = volume_figure_pngs(volume.array, result.lung, result.infection, volume.spacing, classes=result.classes,
                              name=volume.name)
    if through_plane_views(volume.array.shape[0]):
        pngs[CURVE] = infection_curve_png(rows, volume.spacing, title=volume.name, class_columns=class_columns(
            result.n_classes) if result.classes is not None else ())
    return pngs


def warm_pictures() -> threading.Thread:
    """Import the pictures' modules (matplotlib, ``skimage.transform``: 0.6-0.8 s) in a thread of their own, now.

    :func:`covseg.engines.inference.batch.run_batch` calls it while it waits for its first volume to be read: the
    imports then use a core that would idle, instead of delaying the first volume's pictures at the end of its
    inference. The main thread imports nothing while its volumes compute, so the two threads never import the same
    package at once; a picture thread that starts before this one is done waits for the modules (Python's import locks).
    """
    thread = threading.Thread(target=_import_pictures, name="covseg-pictures-import", daemon=True)
    thread.start()
    return thread


def _import_pictures() -> None:
    """The imports of :func:`draw_pictures`; an error shows up where the pictures are drawn, not here."""
    with contextlib.suppress(Exception):
        import covseg.reports.curves  # noqa: F401
        import covseg.reports.pictures.volume_figures  # noqa: F401


def start_pictures(volume: CTVolume, result: VolumeInference, rows: list[dict]) -> Future:
    """:func:`draw_pictures` in a thread of its own, from now on: a volume's pictures are drawn while its report is
    built and its masks are compressed (the future goes into
    :attr:`covseg.engines.inference.outputs.VolumeOutputs.pictures`)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covseg-pictures")
    try:
        return pool.submit(draw_pictures, volume, result, rows)
    finally:
        pool.shutdown(wait=False)  # the thread ends once the pictures are drawn
