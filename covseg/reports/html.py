"""``report.html``: one self-contained page per batch (images as data URIs, inline CSS and JS, no network).

A table of the volumes (lung and infection volumes, % of lung involved, severity score, infected slices;
sortable by clicking a column header) whose names link to one section per volume: axial montage, coronal and
sagittal reformats, infection-per-slice curve, lung and infection volumes per lung, the severity table with
its rule, the model (name, version, precision), warnings and, with a reference label, the scores (per class too;
with labels the table adds Dice and Sen. columns, and the scores over volumes follow it). A volume of
``covseg diagnose`` adds its decision (a sortable column, by the share of positive slices) and the classifier's
activation montage; a negative patient, not segmented, shows no infection pictures. A failed
volume keeps its row with the one-line error. A Content-Security-Policy meta tag forbids every fetch but images
from the page's own folder, so the page cannot reach the network even if a value were to hold a URL.

A page of up to :data:`EMBED_MAX_VOLUMES` volumes carries its pictures (about 0.5 MB a volume as base64). A larger
batch's page links them from the volume folders instead (``<name>/montage.png``, loaded as they scroll into view):
embedded, 200 volumes made a 104 MB page that took headless chromium 78 s to open (audit of 2026-12-07).
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from covseg.io.atomic import atomic_write_text
from covseg.io.outlock import output_lock
from covseg.reports.diagnosis import decision_summary, positive_fraction, shown_verdict, verdict
from covseg.reports.picks import THROUGH_PLANE_MIN_SLICES, through_plane_views
from covseg.reports.score_summary import score_summary

__all__ = ["ACTIVATION_IMAGE", "EMBED_MAX_VOLUMES", "IMAGES", "VolumeEntry", "entries_from_summary", "render_report",
           "write_html_report"]

EMBED_MAX_VOLUMES = 20
"""The most volumes whose pictures ``report.html`` embeds; a larger batch's page links them from the volume folders."""

IMAGES = (("montage", "Axial slices, lung window"), ("reformats", "Coronal and sagittal reformats"),
          ("curve", "Infection per slice"))
"""Keys of a volume's pictures (as in ``report.outputs``) and their captions, in page order."""
THROUGH_PLANE = ("reformats", "curve")
"""The pictures a volume of too few slices does not get (:func:`covseg.reports.picks.through_plane_views`)."""
ACTIVATION_IMAGE = ("activation_montage", "Activation maps of the classifier over its strongest slices (JCS Eq. 1-2)")
"""The picture ``covseg diagnose`` adds (key, caption)."""
CSP = ("default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-top:1px solid #ccc;padding-top:.8em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f2f5}td.t,th.t{text-align:left}th[data-type]{cursor:pointer}
th[aria-sort=descending]::after{content:" \\25BC"}th[aria-sort=ascending]::after{content:" \\25B2"}
tr.failed td{background:#fde8e8}.err{color:#a00}.note{color:#555;font-size:.92em;max-width:60em}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
"""

_JS = """
(function () {
  "use strict";
  var table = document.getElementById("volumes");
  var heads = table.tHead.rows[0].cells;
  function value(row, col, numeric) {
    var cell = row.cells[col];
    var v = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (!numeric) { return v.toLowerCase(); }
    v = parseFloat(v);
    return isNaN(v) ? -Infinity : v;
  }
  function sortBy(th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") === "descending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(heads, function (th) {
    if (th.hasAttribute("data-type")) {
      th.addEventListener("click", function () { sortBy(th); });
    }
  });
  window.covsegSortBy = function (key) { sortBy(document.getElementById("col-" + key)); };
  table.setAttribute("data-sortable", "ready");
})();
"""

_COLUMNS = (  # key, header, type (num/text), tooltip
    ("name", "Volume", "text", ""),
    ("status", "Status", "text", ""),
    ("lung_ml", "Lung mL", "num", "both lungs"),
    ("infection_ml", "Infection mL", "num", "the whole infection mask, which may reach a few mm outside the lung mask"),
    ("involvement", "% lung involved", "num", "100 x infection in the lungs / lung volume"),
    ("right", "Right %", "num", "right lung involved"),
    ("left", "Left %", "num", "left lung involved"),
    ("severity", "Severity (0-30)", "num", "sum of the 6 zone scores (see each volume)"),
    ("slices", "Infected / lung slices", "num", ""),
)
_SCORE_COLUMNS = (("dice", "Dice", "num", "against the reference label (--labels)"),
                  ("sensitivity", "Sen.", "num", "against the reference label (--labels)"))
_DIAGNOSIS_COLUMN = ("diagnosis", "Diagnosis", "num", "covseg diagnose: the patient decision, sorted by the share of "
                                                      "positive slices")


@dataclass
class VolumeEntry:
    """One volume of the page: ``report`` is ``VolumeReport.to_dict()`` (``None`` for a failure); ``images``
    maps the keys of :data:`IMAGES` to PNG bytes."""

    name: str
    status: str = "ok"
    source: str = ""
    error: str | None = None
    report: dict | None = None
    images: dict[str, bytes] = field(default_factory=dict)
    diagnosis: dict | None = None
    """The volume's ``diagnosis.json`` (``covseg diagnose``), else ``None``."""
    links: dict[str, str] = field(default_factory=dict)
    """Pictures linked instead of embedded: key -> URL relative to the page (a large batch's page)."""


def entries_from_summary(summary: dict, out_dir: str | Path, embed: bool = True) -> list[VolumeEntry]:
    """Entries from a ``summary.json`` object (:func:`covseg.reports.batch.write_batch_report`): one per volume,
    pictures read from the volume's folder (its ``out_dir``, else ``<out_dir>/<name>/``) as listed in each
    report's ``outputs`` (those missing left out); ``embed=False``: linked (paths relative to ``out_dir``), not read."""
    entries = []
    for v in summary.get("volumes", []):
        name = str(v.get("name", "?"))
        if v.get("status") != "ok":
            entries.append(VolumeEntry(name, str(v.get("status", "error")), str(v.get("source", "")), v.get("error")))
            continue
        folder = Path(out_dir) / name
        if v.get("out_dir") and Path(v["out_dir"]).is_dir():  # the folder the volume went to (may be tagged)
            folder = Path(v["out_dir"])
        outputs = v.get("outputs") or {}
        images: dict[str, bytes] = {}
        links: dict[str, str] = {}
        for key, _ in (*IMAGES, ACTIVATION_IMAGE):
            path = folder / outputs[key] if outputs.get(key) else None
            if path is not None and path.is_file():
                if embed:
                    images[key] = path.read_bytes()
                else:
                    links[key] = quote(Path(os.path.relpath(path, out_dir)).as_posix())
        entries.append(VolumeEntry(name, "ok", str(v.get("source", "")), None, v, images,
                                   _read_json(folder / outputs["diagnosis"]) if outputs.get("diagnosis") else None,
                                   links))
    return entries


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(v: object, digits: int = 1) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


def _lung_percent(rep: dict, side: str) -> float | None:
    lung = rep.get(f"{side}_lung_ml") or 0.0
    infection = rep.get(f"{side}_infection_ml", 0.0)
    return 100.0 * (infection or 0.0) / lung if lung and infection is not None else None


UNMEASURED = ("infection_ml", "right_infection_ml", "left_infection_ml", "lung_involvement_percent", "severity",
              "infected_slices")
"""What a volume ``covseg diagnose`` did not segment has not measured: its report holds 0 (the mask is empty), the
page shows '-' (a 0 / 30 severity would read as a measured normal)."""


def _not_segmented(entry: VolumeEntry) -> bool:
    return bool(entry.diagnosis) and not entry.diagnosis.get("segmented", True)


def _shown_report(entry: VolumeEntry) -> dict | None:
    """The report as the page shows it: without the infection figures of a volume that was not segmented."""
    if entry.report is None or not _not_segmented(entry):
        return entry.report
    return {**entry.report, **dict.fromkeys(UNMEASURED)}


def _columns(entries: Sequence[VolumeEntry]) -> tuple[tuple[str, str, str, str], ...]:
    """The table's columns: with a diagnosis column after the status when some volume has one, and the scores
    against the labels last when some volume has them."""
    columns = _COLUMNS if not any(e.diagnosis for e in entries) else (*_COLUMNS[:2], _DIAGNOSIS_COLUMN,
                                                                       *_COLUMNS[2:])
    return (*columns, *_SCORE_COLUMNS) if _scored(entries) else columns


def _scored(entries: Sequence[VolumeEntry]) -> bool:
    return any(e.report is not None and e.report.get("metrics") for e in entries)


def _diagnosis_cell(d: dict | None) -> tuple[str, str]:
    if not d:
        return "-", ""
    return (f"{shown_verdict(d)}, {d.get('positive_slices')} / {d.get('classified_slices')} slices",
            f"{positive_fraction(d):.6f}")


def _cells(i: int, entry: VolumeEntry, with_diagnosis: bool = False, with_scores: bool = False
           ) -> list[tuple[str, str]]:
    """(display html, sort value) per column."""
    link = f'<a href="#vol-{i}">{_e(entry.name)}</a>'
    rep = _shown_report(entry)
    if rep is None:
        n_rest = len(_COLUMNS) - 2 + int(with_diagnosis) + len(_SCORE_COLUMNS) * int(with_scores)
        return [(link, entry.name), ('<span class="err">failed</span>', "failed")] + [("-", "")] * n_rest
    metrics = (entry.report or {}).get("metrics") or {}  # scored also where not segmented: its empty mask counts
    scores = [(_num(metrics.get(key), 3), _value(metrics.get(key))) for key, *_ in _SCORE_COLUMNS] if with_scores \
        else []
    sev = rep.get("severity") or {}
    right, left = _lung_percent(rep, "right"), _lung_percent(rep, "left")
    total = sev.get("total_score")
    diagnosis = [_diagnosis_cell(entry.diagnosis)] if with_diagnosis else []
    return [
        (link, entry.name), (_e(entry.status), entry.status), *diagnosis,
        (_num(rep.get("lung_ml")), str(rep.get("lung_ml", ""))),
        (_num(rep.get("infection_ml")), _value(rep.get("infection_ml"))),
        (_num(rep.get("lung_involvement_percent"), 2), _value(rep.get("lung_involvement_percent"))),
        (_num(right, 2), "" if right is None else f"{right:.6f}"),
        (_num(left, 2), "" if left is None else f"{left:.6f}"),
        ("-" if total is None else str(total), "" if total is None else str(total)),
        (f"{_plain_count(rep.get('infected_slices', 0))} / {rep.get('lung_slices', 0)}",
         _value(rep.get("infected_slices"))),
        *scores,
    ]


def _value(v: object) -> str:
    """A cell's sort value: empty for a missing one (sorted last)."""
    return "" if v is None else str(v)


def _plain_count(v: object) -> str:
    return "-" if v is None else str(v)


def _table(entries: Sequence[VolumeEntry]) -> str:
    columns = _columns(entries)
    head = "".join(
        f'<th id="col-{key}" class="{"t" if kind == "text" else ""}" data-type="{kind}" title="{_e(tip)}">'
        f"{_e(label)}</th>" for key, label, kind, tip in columns)
    rows = []
    with_diagnosis, with_scores = any(e.diagnosis for e in entries), _scored(entries)
    for i, entry in enumerate(entries):
        cells = "".join(f'<td class="{"t" if kind == "text" else ""}" data-value="{_e(value)}">{shown}</td>'
                        for (shown, value), (_, _, kind, _) in zip(_cells(i, entry, with_diagnosis, with_scores),
                                                                   columns))
        cls = ' class="failed"' if entry.report is None else ""
        rows.append(f'<tr id="row-{i}" data-volume="{_e(entry.name)}"{cls}>{cells}</tr>')
    return (f'<table id="volumes"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="note">Click a column header to sort (first click: largest first).</p>'
            + _scores_over_volumes(entries))


def _scores_over_volumes(entries: Sequence[VolumeEntry]) -> str:
    """The batch's scores against its labels, over volumes (mean ± sd, median, range; per class too), or ''."""
    scores = score_summary(e.report for e in entries if e.report is not None)
    if scores is None:
        return ""
    rows = [(name, *(_num(st.get(k), 4) for k in ("mean", "sd", "median", "min", "max")), st["n"])
            for name, st in scores["metrics"].items()]
    for cls, metrics in (scores.get("classes") or {}).items():
        rows += [(f"{cls} {name}", *(_num(st.get(k), 4) for k in ("mean", "sd", "median", "min", "max")), st["n"])
                 for name, st in metrics.items()]
    return (f'<h3 id="scores">Scores against the labels over {scores["n"]} volume(s)</h3>'
            + _scores_note(entries, scores)
            + _kv_table(rows, ("metric", "mean", "sd", "median", "min", "max", "volumes")))


def _kv_table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _volumes_table(rep: dict) -> str:
    """Right, left and both lungs with the infection inside each (so that infection / lung = % involved on every
    row), then the whole infection mask, which may reach a few mm outside the lung mask."""
    rows = []
    for side in ("right", "left"):
        pct = _lung_percent(rep, side)
        rows.append((side, _num(rep.get(f"{side}_lung_ml")), _num(rep.get(f"{side}_infection_ml")), _num(pct, 2)))
    sides = [rep.get(f"{side}_infection_ml") for side in ("right", "left")]
    inside = None if None in sides else sum(float(v) for v in sides)
    rows.append(("both", _num(rep.get("lung_ml")), _num(inside), _num(rep.get("lung_involvement_percent"), 2)))
    rows.append(("whole infection mask", "", _num(rep.get("infection_ml")), ""))
    table = _kv_table(rows, ("lung", "lung mL", "infection mL (in the lung)", "% involved"))
    extra = ""
    if rep.get("class_volumes"):
        names = {"ggo": "ground-glass opacity", "consolidation": "consolidation"}
        extra = _kv_table([(names.get(k, k), _num(v.get("ml")), _num(v.get("lung_percent"), 2),
                            _num(v.get("right_ml")), _num(v.get("left_ml")))
                           for k, v in rep["class_volumes"].items()],
                          ("class", "mL", "% of lung", "right lung mL", "left lung mL"))
    elif rep.get("class_ml"):  # reports written before class_volumes
        names = {"1": "ground-glass opacity", "2": "consolidation"}
        extra = _kv_table([(names.get(k, f"class {k}"), _num(v)) for k, v in rep["class_ml"].items()],
                          ("class", "mL"))
    note = ('<p class="note">Infection mL and % count the infection inside each lung; the whole infection mask '
            "(the Infection mL of the table at the top and infection_ml of report.json) may reach a few mm outside "
            "the lung mask.</p>")
    return table + extra + note


def _severity_table(sev: dict | None) -> str:
    if not sev:
        return "<p>No severity score.</p>"
    rows = [(z["lung"], z["zone"], f"{z['slices'][0]}-{z['slices'][1] - 1}" if z["slices"][1] > z["slices"][0]
             else "-", _num(z["percent"], 2), "-" if z["score"] is None else z["score"]) for z in sev["zones"]]
    rows += [(lu["lung"], "whole lung", "", _num(lu["percent"], 2), f"{lu['score']} / 15") for lu in sev["lungs"]]
    rows.append(("total", "", "", "", f"{sev['total_score']} / {sev['max_score']}"))
    warn = "".join(f'<p class="note err">{_e(w)}</p>' for w in sev.get("warnings", []))
    return (_kv_table(rows, ("lung", "zone", "slices", "% involved", "score"))
            + f'<p class="note"><b>Rule.</b> {_e(sev["rule"])} <b>Zones.</b> {_e(sev["note"])} '
              f"<b>Source.</b> {_e(sev['source'])}</p>{warn}")


def _model_line(model: dict) -> str:
    if not model:
        return "<p>Model: not recorded.</p>"
    shown = {"name": model.get("name"), "version": model.get("version"), "precision": model.get("precision")}
    others = {k: v for k, v in model.items() if k not in shown}
    parts = [f"<b>{_e(k)}</b> {_e(v if v is not None else 'not recorded')}" for k, v in shown.items()]
    parts += [f"{_e(k)} {_e(_plain(v))}" for k, v in others.items()]
    return "<p>Model: " + "; ".join(parts) + "</p>"


def _plain(value: object) -> str:
    """A report value as text; a nested record (e.g. the slice gate) as ``key value, key value``."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) + ")"
    return str(value)


def _img(key: str, caption: str, entry: VolumeEntry) -> str:
    data = entry.images.get(key)
    if data is None and key in entry.links:  # a large batch's page: the file beside it, loaded when scrolled to
        return (f'<figure><img src="{_e(entry.links[key])}" loading="lazy" alt="{_e(entry.name)}: {_e(caption)}" '
                f'data-volume="{_e(entry.name)}" data-kind="{_e(key)}"><figcaption>{_e(caption)}</figcaption></figure>')
    n_slices = (entry.report or {}).get("n_slices")
    if data is None and key in THROUGH_PLANE and isinstance(n_slices, int) and not through_plane_views(n_slices):
        return (f'<p class="note" data-missing="{_e(key)}">{_e(caption)}: not drawn, the scan has {n_slices} axial '
                f"slice{'s' if n_slices != 1 else ''} (fewer than {THROUGH_PLANE_MIN_SLICES}).</p>")
    if data is None:
        return f'<p class="note" data-missing="{_e(key)}">{_e(caption)}: not written.</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{_e(entry.name)}: {_e(caption)}" data-volume="{_e(entry.name)}" '
            f'data-kind="{_e(key)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _section(i: int, entry: VolumeEntry) -> str:
    title = f'<h2 id="vol-{i}">{_e(entry.name)}</h2><p class="note">{_e(entry.source)}</p>'
    rep = _shown_report(entry)
    if rep is None:
        return f'<section data-volume="{_e(entry.name)}">{title}<p class="err">{_e(entry.error)}</p></section>'
    parts = [title, _model_line(rep.get("model") or {})]
    parts += [f'<p class="err">warning: {_e(w)}</p>' for w in rep.get("warnings", [])]
    d = entry.diagnosis
    if d:
        parts += [f'<p data-diagnosis="{verdict(d)}"><b>Diagnosis.</b> '
                  f"{_e(_diagnosis_text(d))}</p>", _img(*ACTIVATION_IMAGE, entry)]
    if d and not d.get("segmented", True):
        parts += ['<p class="note">Not segmented: the classifier found the patient negative, so the infection mask '
                  "is empty and no infection pictures were drawn.</p>"]
    else:
        parts += [_img(key, caption, entry) for key, caption in IMAGES]
    parts += ["<h3>Lung and infection volumes</h3>", _volumes_table(rep)]
    parts += ["<h3>Severity score</h3>", '<p class="note">Not scored: the patient was not segmented.</p>'
              if _not_segmented(entry) else _severity_table(rep.get("severity"))]
    scores = (entry.report or {}).get("metrics")
    if scores:
        values = (entry.report or {}).get("label_values")
        scored = f" (label values scored as infection: {', '.join(map(str, values))})" if values else ""
        parts += [f"<h3>Scores against the label{_e(scored)}</h3>",
                  _kv_table([(k, _num(v, 4)) for k, v in scores.items()], ("metric", "value"))]
        per_class = (entry.report or {}).get("class_metrics") or {}
        if per_class:
            names = list(next(iter(per_class.values())))
            parts.append(_kv_table([(cls, *(_num(m.get(k), 4) for k in names)) for cls, m in per_class.items()],
                                   ("class", *names)))
    return f'<section data-volume="{_e(entry.name)}">{"".join(parts)}</section>'


def _scores_note(entries: Sequence[VolumeEntry], scores: dict) -> str:
    """What the scores over volumes are: every volume once; how unsegmented patients count; mixed label values."""
    notes = ["Each volume counts once (the mean of the per-volume scores)"]
    if any(e.diagnosis for e in entries):
        notes.append("a patient that covseg diagnose did not segment is scored with its empty mask")
    if len(scores.get("label_values") or ()) > 1:
        mixed = "; ".join(", ".join(map(str, values)) or "-" for values in scores["label_values"])
        notes.append(f"the volumes were scored with different label values ({mixed})")
    return f'<p class="note">{_e("; ".join(notes))}.</p>'


def _diagnosis_text(d: dict) -> str:
    try:
        return decision_summary(d)
    except (KeyError, TypeError, ValueError):  # a diagnosis.json of another version: say what it holds
        return verdict(d)


def render_report(entries: Sequence[VolumeEntry], meta: dict | None = None) -> str:
    """The HTML text of the page."""
    meta = dict(meta or {})
    n_ok = sum(e.report is not None for e in entries)
    linked = ('<p class="note" id="linked-pictures">The pictures are linked from the volume folders beside this page '
              f"(more than {EMBED_MAX_VOLUMES} volumes): keep the page in its output folder.</p>"
              if any(e.links for e in entries) else "")
    header = " &middot; ".join(f"{_e(k)}: {_e(v if isinstance(v, str) else json.dumps(v))}"
                               for k, v in meta.items() if v not in (None, "", [], {}))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>covseg report ({len(entries)} volume{'' if len(entries) == 1 else 's'})</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>covseg report</h1><p>{n_ok} of {len(entries)} volume(s) processed.</p>"
        f'<p class="note">{header}</p>{linked}'
        f"{_table(entries)}"
        + "".join(_section(i, e) for i, e in enumerate(entries))
        + f"<script>{_JS}</script></body></html>\n"
    )


def write_html_report(out_dir: str | Path, meta: dict | None = None, embed_max: int = EMBED_MAX_VOLUMES) -> Path:
    """Write ``<out_dir>/report.html`` from ``<out_dir>/summary.json`` (every volume of the folder, also those of
    earlier or concurrent runs merged there), under the output folder's lock; return its path. The pictures are
    embedded when the summary lists at most ``embed_max`` volumes, else linked from the volume folders."""
    out_dir = Path(out_dir)
    with output_lock(out_dir):
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        if meta is None:
            meta = {k: v for k, v in summary.items() if k not in ("volumes", "runs")}
        embed = len(summary.get("volumes", [])) <= embed_max
        text = render_report(entries_from_summary(summary, out_dir, embed), meta)
        return atomic_write_text(out_dir / "report.html", text)
