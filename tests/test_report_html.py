"""report.html: self-contained, every volume's row, section and pictures; in headless chromium: no console
message, no error, no broken image, sorting works; a broken page is caught."""

from __future__ import annotations

import base64
import json
import re

import pytest
from headless_browser import open_page

from covseg.reports.batch import VolumeResult, write_batch_report
from covseg.reports.curves import infection_curve_png
from covseg.reports.html import CSP, VolumeEntry, entries_from_summary, render_report, write_html_report
from covseg.reports.pictures.montage import montage_png
from covseg.reports.pictures.reformats import reformats_png
from covseg.reports.severity import compute_severity
from covseg.reports.volume import VolumeReport, build_volume_report, slice_rows
from covseg.synthetic.phantom import make_chest_phantom

MODEL = {"name": "infnet", "version": "0.5.0", "precision": "fp32"}


def _entry(seed: int, name: str) -> VolumeEntry:
    ph = make_chest_phantom((24, 64, 64), (5.6, 5.6, 10.0), seed=seed)
    rep = build_volume_report(name, f"/data/{name}.nii.gz", ph.lung_labels, ph.infection, ph.spacing, model=MODEL)
    d = rep.to_dict()
    d["severity"] = compute_severity(ph.lung_labels, ph.infection).to_dict()
    images = {"montage": montage_png(ph.hu, ph.infection, ph.spacing, lung=ph.lung_labels, n=4, dpi=50),
              "reformats": reformats_png(ph.hu, ph.infection, ph.spacing, lung=ph.lung_labels, dpi=50),
              "curve": infection_curve_png(slice_rows(ph.lung_labels, ph.infection), ph.spacing, dpi=50)}
    return VolumeEntry(name, "ok", d["source"], None, d, images)


@pytest.fixture(scope="module")
def entries() -> list[VolumeEntry]:
    return [_entry(1, "alpha <1>"), _entry(4, "beta"),
            VolumeEntry("gamma", "error", "/data/gamma.nii.gz", "/data/gamma.nii.gz: truncated file")]


def test_page_is_self_contained_and_complete(entries):
    text = render_report(entries, {"command": "covseg infer", "model": MODEL})
    assert f'content="{CSP}"' in text and "default-src 'none'" in CSP
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:image/png;base64,", "#vol-")) for r in refs)
    assert "http://" not in text and "https://" not in text
    assert "alpha &lt;1&gt;" in text and "alpha <1>" not in text  # names are escaped
    for i in range(len(entries)):
        assert f'id="row-{i}"' in text and f'id="vol-{i}"' in text and f'href="#vol-{i}"' in text
    assert text.count("data:image/png;base64,") == 6  # 3 pictures x 2 processed volumes
    assert "truncated file" in text
    for word in ("Pan F", "not anatomical lobes", "infnet", "0.5.0", "fp32", "Severity"):
        assert word in text


def test_html_from_the_merged_summary(tmp_path, entries):
    rep = build_volume_report("v", "/x", *(lambda p: (p.lung_labels, p.infection, p.spacing))(
        make_chest_phantom((8, 32, 32), (10.0, 10.0, 20.0))))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "montage.png").write_bytes(entries[0].images["montage"])
    rep.outputs = {"montage": "montage.png", "reformats": "reformats.png"}  # reformats not written
    (tmp_path / "v" / "report.json").write_text(rep.to_json())
    results = [VolumeResult("v", "/x", report=rep, out_dir=str(tmp_path / "v")),
               VolumeResult("w", "/w", status="error", error="/w: bad")]
    write_batch_report(results[:1], tmp_path, {"command": "first run"})
    write_batch_report(results[1:], tmp_path, {"command": "second run"})  # merged into the same summary
    summary = json.loads((tmp_path / "summary.json").read_text())
    got = entries_from_summary(summary, tmp_path)
    assert [e.name for e in got] == ["v", "w"]
    assert list(got[0].images) == ["montage"] and got[1].report is None and got[1].error == "/w: bad"
    path = write_html_report(tmp_path)
    text = path.read_text()
    assert path.name == "report.html" and 'data-missing="reformats"' in text and text.count("data:image/png") == 1
    assert 'data-volume="v"' in text and 'data-volume="w"' in text and "second run" in text


def test_a_short_scan_says_why_it_has_no_reformats_or_curve(entries):
    short = VolumeEntry("short", "ok", "/data/short.nii.gz", None, {**entries[0].report, "n_slices": 2},
                        {"montage": entries[0].images["montage"]})
    text = render_report([short], {"command": "covseg infer"})
    for key in ("reformats", "curve"):
        assert re.search(f'data-missing="{key}">[^<]*: not drawn, the scan has 2 axial slices \\(fewer than 8\\)', text)
    long = VolumeEntry("long", "ok", "/data/long.nii.gz", None, entries[0].report, short.images)
    assert 'data-missing="reformats">Coronal and sagittal reformats: not written.' in render_report([long], {})


def test_report_in_headless_chromium(tmp_path, entries):
    page = tmp_path / "report.html"
    page.write_text(render_report(entries, {"command": "covseg infer"}), encoding="utf-8")
    check = open_page(page, tmp_path / "browser")
    assert check.problems == []
    assert check.sortable == "ready"
    assert check.rows == [e.name for e in entries]
    shown = {(v, kind) for v, kind, w, h in check.images if w > 50 and h > 50}
    for e in entries[:2]:
        assert {(e.name, k) for k in ("montage", "reformats", "curve")} <= shown
    inv = {e.name: e.report["lung_involvement_percent"] for e in entries[:2]}
    assert check.sorted_rows == sorted(inv, key=inv.get, reverse=True) + ["gamma"]  # largest first, failed last


def test_broken_page_is_caught(tmp_path, entries):
    text = render_report(entries[:2], {})
    good = base64.b64encode(entries[1].images["curve"]).decode("ascii")
    broken = text.replace(good, "bm90IGEgcG5n", 1)  # 'not a png'
    broken = broken.replace("</body>", "<script>console.error('oops'); notDefinedAnywhere();</script></body>")
    broken = broken.replace('table.setAttribute("data-sortable", "ready");', "")
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    check = open_page(page, tmp_path / "browser")
    joined = " | ".join(check.problems)
    assert "oops" in joined and "notDefinedAnywhere" in joined
    assert check.broken_images == ["beta"]
    assert check.sortable is None


def test_a_large_batch_links_its_pictures_and_they_load(tmp_path, entries):
    """Embedded, 200 volumes made a 104 MB page that took headless chromium 78 s to open (audit of 2026-12-07):
    above ``embed_max`` volumes the pictures are linked from the volume folders, and still show."""
    results = []
    for e in entries[:2]:
        folder = tmp_path / e.name
        folder.mkdir()
        for key in ("montage", "reformats", "curve"):
            (folder / f"{key}.png").write_bytes(e.images[key])
        report = {**e.report, "outputs": {"montage": "montage.png", "reformats": "reformats.png",
                                          "curve": "curve.png"}}
        (folder / "report.json").write_text(json.dumps(report))
        results.append(VolumeResult(e.name, e.source, report=VolumeReport.from_dict(report), out_dir=str(folder)))
    write_batch_report(results + [VolumeResult("gamma", "/g", status="error", error="/g: bad")], tmp_path)
    embedded = write_html_report(tmp_path).read_text()  # 3 volumes: within the default, embedded
    assert embedded.count("data:image/png;base64,") == 6 and 'id="linked-pictures"' not in embedded
    text = write_html_report(tmp_path, embed_max=2).read_text()
    assert "data:image/png" not in text and 'id="linked-pictures"' in text and len(text) < len(embedded) / 5
    links = re.findall(r'<img src="([^"]+)"', text)
    assert sorted(links) == sorted(f"{folder}/{k}.png" for folder in ("alpha%20%3C1%3E", "beta")
                                   for k in ("montage", "reformats", "curve"))
    check = open_page(tmp_path / "report.html", tmp_path)  # the probed copy beside the page: links resolve
    assert check.problems == [] and check.rows == ["alpha <1>", "beta", "gamma"]
    assert {(v, kind) for v, kind, w, h in check.images if w > 50 and h > 50} == {
        (e.name, k) for e in entries[:2] for k in ("montage", "reformats", "curve")}


def test_the_model_line_spells_out_the_gate():
    from covseg.reports.html import _model_line

    line = _model_line({**MODEL, "gate": {"classifier": "jcs_classifier", "threshold": 0.1921}})
    assert "gate (classifier jcs_classifier, threshold 0.1921)" in line and "{" not in line


def test_a_diagnosis_adds_its_column_decision_and_activation_montage(tmp_path, entries):
    d = {"positive": False, "positive_slices": 9, "classified_slices": 63, "lung_slices": 69,
         "patient_threshold_slices": 31.5, "infection_ml": 0.0, "lung_involvement_percent": 0.0, "segmented": False}
    diagnosed = [VolumeEntry(e.name, e.status, e.source, e.error, e.report,
                             {"activation_montage": e.images["curve"]} if e.report else {},
                             {**d, "positive": i == 1, "segmented": i == 1} if e.report else None)
                 for i, e in enumerate(entries)]
    text = render_report(diagnosed, {"command": "covseg diagnose"})
    assert 'id="col-diagnosis"' in text and "negative, 9 / 63 slices" in text
    assert "negative (9 of 63 classified lung slices positive, threshold &gt; 31.5; 6 end slices" in text
    assert text.count('data-kind="activation_montage"') == 2 and text.count("Not segmented") == 1
    assert text.count('data-missing="montage"') == 1  # the positive one was segmented: its pictures are expected
    assert 'id="col-diagnosis"' not in render_report(entries, {})  # covseg infer's page keeps its columns
    page = tmp_path / "diagnose.html"
    page.write_text(text, encoding="utf-8")
    check = open_page(page, tmp_path / "browser")
    assert check.problems == [] and check.sortable == "ready" and check.rows == [e.name for e in entries]


def test_a_multi_class_volume_shows_each_class_in_ml_percent_and_per_lung():
    import numpy as np

    ph = make_chest_phantom((24, 64, 64), (5.6, 5.6, 10.0), seed=2)
    classes = np.where(ph.infection > 0, 1, 0).astype(np.uint8)
    classes[ph.infection.shape[0] // 2:][ph.infection[ph.infection.shape[0] // 2:] > 0] = 2
    rep = build_volume_report("mc", "/data/mc.nii.gz", ph.lung_labels, ph.infection, ph.spacing, model=MODEL,
                              classes=classes, n_classes=3).to_dict()
    text = render_report([VolumeEntry("mc", "ok", rep["source"], None, rep, {})], {"model": MODEL})
    for name in ("ggo", "consolidation"):
        v = rep["class_volumes"][name]
        assert v["ml"] > 0
        shown = [f"{v['ml']:.1f}", f"{v['lung_percent']:.2f}", f"{v['right_ml']:.1f}", f"{v['left_ml']:.1f}"]
        row = re.search(rf"<tr><td>{'ground-glass opacity' if name == 'ggo' else name}</td>(.*?)</tr>", text)
        assert row is not None and re.findall(r"<td>([^<]*)</td>", row.group(1)) == shown
    assert "% of lung" in text and "left lung mL" in text


def test_every_row_of_the_volumes_table_adds_up_to_its_percent():
    """The 'both' row listed the whole infection mask under 'infection mL (in the lung)': on chest-2slice 3.5 mL
    beside 38.6 mL of lung and 6.77 % involved (3.5 / 38.6 = 9.1 %); the mask's 0.9 mL outside the lung mask
    were only explained in a note. Each row now holds the infection inside its lung(s), the whole mask its own row."""
    rep = {"lung_ml": 38.647, "right_lung_ml": 24.7, "left_lung_ml": 13.947, "infection_ml": 3.515,
           "right_infection_ml": 1.164, "left_infection_ml": 1.451, "lung_involvement_percent": 6.766}
    text = render_report([VolumeEntry("two", "ok", "/data/two.nii.gz", None, rep, {})], {})
    rows = {m.group(1): re.findall(r"<td>([^<]*)</td>", m.group(2))
            for m in re.finditer(r"<tr><td>([a-z ]+)</td>(.*?)</tr>", text)}
    assert [rows[side][1] for side in ("right", "left")] == ["1.2", "1.5"]
    lung, infection, percent = (float(v) for v in rows["both"])
    assert 100 * infection / lung == pytest.approx(percent, abs=0.15)  # 2.6 / 38.6: 6.7 %, not 3.5 / 38.6 = 9.1 %
    assert rows["whole infection mask"] == ["", "3.5", ""]
    assert re.search(r'id="col-infection_ml"[^>]*title="the whole infection mask', text)  # the top table's column


def test_a_patient_not_segmented_shows_no_measured_zero(entries):
    """covseg diagnose's negative patient is not segmented, so its report holds an empty mask: the page showed
    0.0 mL, 0.00 % and a severity of 0 / 30 as if the lungs had been measured clear."""
    rep = entries[0].report
    d = {"decision": "negative", "positive_slices": 9, "classified_slices": 63, "lung_slices": 69,
         "patient_threshold_slices": 31.5, "infection_ml": 0.0, "lung_involvement_percent": 0.0, "segmented": False}
    empty = {**rep, "infection_ml": 0.0, "right_infection_ml": 0.0, "left_infection_ml": 0.0,
             "lung_involvement_percent": 0.0, "infected_slices": 0,
             "severity": {**rep["severity"], "total_score": 0}}
    text = render_report([VolumeEntry("neg", "ok", "/data/neg.nii.gz", None, empty, {}, d),
                          VolumeEntry("pos", "ok", "/data/pos.nii.gz", None, rep, {}, {**d, "segmented": True})], {})
    row = re.search(r'<tr id="row-0".*?</tr>', text).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[3] == f"{rep['lung_ml']:.1f}"  # the lungs were measured
    assert cells[4:9] == ["-"] * 5 and cells[9] == f"- / {rep['lung_slices']}"  # mL, %, right, left, severity
    neg = text[text.index('<section data-volume="neg"'):text.index('<section data-volume="pos"')]
    assert "Not scored: the patient was not segmented" in neg and "/ 30" not in neg and "0.00" not in neg
    pos = text[text.index('<section data-volume="pos"'):]
    assert f"{rep['severity']['total_score']} / 30" in pos  # a segmented patient keeps its figures
