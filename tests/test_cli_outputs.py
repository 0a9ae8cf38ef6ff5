"""``covseg infer`` picture and DICOM-SEG / DICOM-SR options on phantom inputs: defaults, --overlays, --no-figures,
--dicom-seg / --no-dicom-seg, severity in report.json, report.html beside the summary."""

from __future__ import annotations

import json

import highdicom as hd
import pytest
from utils import use_tiny_default_model

from covseg.cli.main import main
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_phantom_dicom
from covseg.synthetic.phantom_nifti import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PICTURES = {"montage.png", "reformats.png", "infection_curve.png"}


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    """The CLI's default model: a tiny untrained U-Net at 32x32 (the outputs' presence is tested, not accuracy)."""
    use_tiny_default_model(monkeypatch, meta={"version": "9.9.9"})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_outputs")
    phantom = make_chest_phantom((12, 64, 64), (5.6, 5.6, 10.0), seed=3)
    write_phantom_dicom(folder / "series", phantom)
    nifti = write_phantom(folder / "vol.nii.gz", phantom)["ct"]
    return folder / "series", nifti


def _files(folder):
    return {p.name for p in folder.iterdir()}


def test_defaults_pictures_dicom_seg_and_html(tmp_path, inputs):
    series, nifti = inputs
    out = tmp_path / "out"
    assert main(["infer", str(series), str(nifti), "--out", str(out), "--no-progress"]) == 0
    assert {"report.html", "summary.json", "summary.csv", "series", "vol"} <= _files(out)
    assert PICTURES | {"infection_seg.dcm", "infection_sr.dcm"} <= _files(out / "series")
    assert _files(out / "vol") >= PICTURES and not {"infection_seg.dcm", "infection_sr.dcm"} & _files(out / "vol")
    report = json.loads((out / "series" / "report.json").read_text())
    assert report["outputs"]["dicom_seg"] == "infection_seg.dcm" and report["outputs"]["montage"] == "montage.png"
    assert report["outputs"]["dicom_sr"] == "infection_sr.dcm"
    sr = hd.sr.srread(out / "series" / "infection_sr.dcm")  # report.json's numbers (tests/test_dicom_sr.py: more)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    values = {m.unit.value: m.value for m in group.get_measurements()}
    assert values == {"ml": report["infection_ml"], "%": report["lung_involvement_percent"]}
    assert report["model"]["version"] == "9.9.9" and report["model"]["precision"] in ("fp32", "bf16")
    sev = report["severity"]
    assert len(sev["zones"]) == 6 and 0 <= sev["total_score"] <= 30 and "not anatomical lobes" in sev["note"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6 and "9.9.9" in html


def test_overlays_no_figures_and_dicom_seg_switches(tmp_path, inputs):
    series, nifti = inputs
    out = tmp_path / "a"
    assert main(["infer", str(series), "--out", str(out), "--no-progress", "--overlays", "all",
                 "--no-dicom-seg"]) == 0
    assert not {"infection_seg.dcm", "infection_sr.dcm"} & _files(out / "series")
    slices = sorted((out / "series" / "overlays").glob("slice_*.png"))
    assert len(slices) == 12
    out = tmp_path / "b"
    assert main(["infer", str(nifti), "--out", str(out), "--no-progress", "--no-figures", "--dicom-seg"]) == 0
    files = _files(out / "vol")
    assert not (PICTURES & files) and "overlays" not in files and "infection_seg.dcm" not in files
    report = json.loads((out / "vol" / "report.json").read_text())
    assert any("DICOM-SEG not written: the input is not a DICOM series" in w for w in report["warnings"])
    assert "data:image/png" not in (out / "report.html").read_text()


def test_overlays_infected_writes_only_infected_slices(tmp_path, inputs):
    series, _ = inputs
    out = tmp_path / "c"
    assert main(["infer", str(series), "--out", str(out), "--no-progress", "--overlays", "infected",
                 "--no-dicom-seg"]) == 0
    rows = (out / "series" / "slices.csv").read_text().splitlines()[1:]
    infected = {int(r.split(",")[0]) for r in rows if int(r.split(",")[4]) > 0}
    assert infected and len(infected) < 12  # some slices, not all: the choice is tested
    written = {int(p.stem.split("_")[1]) for p in (out / "series" / "overlays").glob("slice_*.png")}
    assert written == infected
