"""``covseg infer`` on all the real CT volumes: a montage (and reformats, curve) per volume, a DICOM-SEG per DICOM
series equal to the written infection mask frame by frame, and a report.html that headless chromium opens with
every volume's row and pictures and no error (skipped without ../shared/data or chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from headless_browser import open_page
from PIL import Image
from utils import use_tiny_default_model

from covseg.cli.main import main
from covseg.io.dicom_seg import read_sources
from covseg.reports.picks import through_plane_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_run(ct_volumes_dir, tmp_path_factory):
    """One ``covseg infer`` over the whole ct-volumes folder with a tiny untrained U-Net at 32x32 (outputs and
    geometry are tested here, not accuracy)."""
    out = tmp_path_factory.mktemp("real_reports") / "out"
    with pytest.MonkeyPatch.context() as mp:
        use_tiny_default_model(mp)
        code = main(["infer", str(ct_volumes_dir), "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    return code, out, summary


def test_pictures_for_every_volume(real_run):
    code, out, summary = real_run
    ok = [v for v in summary["volumes"] if v["status"] == "ok"]
    assert code == 1 and len(ok) >= 6  # the label maps in the folder are refused, every CT is processed
    for v in ok:
        through_plane = through_plane_views(v["n_slices"])  # chest-2slice: 2 slices, the montage only
        for name in ("montage.png", "reformats.png", "infection_curve.png"):
            if name != "montage.png" and not through_plane:
                assert not (out / v["name"] / name).exists(), (v["name"], name)
                continue
            with Image.open(out / v["name"] / name) as im:
                assert im.format == "PNG" and im.width >= 400 and im.height >= 200, (v["name"], name)
        assert len(v["severity"]["zones"]) == 6
    assert any(not through_plane_views(v["n_slices"]) for v in ok)  # the short scan is among them


def _mask_lps(path: Path) -> np.ndarray:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def test_dicom_seg_equals_the_mask_frame_by_frame(real_run):
    _, out, summary = real_run
    dicom = [v for v in summary["volumes"] if v["status"] == "ok" and Path(v["source"]).is_dir()]
    assert len(dicom) == 3, [v["source"] for v in dicom]
    marked = 0
    for v in dicom:
        vdir = out / v["name"]
        assert v["outputs"]["dicom_seg"] == "infection_seg.dcm"
        sources = read_sources(sorted(p for p in Path(v["source"]).iterdir() if p.is_file()))
        uids = [str(ds.get("SOPInstanceUID", "") or "") or str(ds.file_meta.MediaStorageSOPInstanceUID)
                for ds in sources]
        seg = hd.seg.segread(vdir / "infection_seg.dcm")
        frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
        mask = _mask_lps(vdir / "infection_mask.nii.gz")
        assert frames.shape == mask.shape
        for k in range(mask.shape[0]):
            assert np.array_equal(frames[k], mask[k]), (v["name"], k)
        marked += int(np.count_nonzero(mask))
        ref = seg.ReferencedSeriesSequence[0]
        assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == set(uids)
        series_uid = str(sources[0].get("SeriesInstanceUID", "") or "")
        if series_uid:
            assert ref.SeriesInstanceUID == series_uid
        else:
            assert any("no SeriesInstanceUID" in w for w in v["warnings"])
    assert marked > 0  # empty masks and empty frames would agree whatever the frames' order or position
    nifti = [v for v in summary["volumes"] if v["status"] == "ok" and not Path(v["source"]).is_dir()]
    assert nifti and all("dicom_seg" not in v["outputs"] for v in nifti)


def test_dicom_sr_holds_the_report_numbers(real_run):
    """Every real DICOM series (anonymised ones among them) gets an SR in its SEG's study, referencing the SEG, with
    report.json's infection volume, lung share and lung volume."""
    _, out, summary = real_run
    dicom = [v for v in summary["volumes"] if v["status"] == "ok" and Path(v["source"]).is_dir()]
    for entry in dicom:
        v = json.loads((out / entry["name"] / "report.json").read_text())
        assert v["outputs"]["dicom_sr"] == "infection_sr.dcm" and not [w for w in v["warnings"] if "DICOM-SR" in w]
        sr = hd.sr.srread(out / v["name"] / "infection_sr.dcm")
        seg = pydicom.dcmread(out / v["name"] / "infection_seg.dcm", stop_before_pixels=True)
        assert sr.StudyInstanceUID == seg.StudyInstanceUID and sr.PatientID == seg.PatientID
        (group,) = sr.content.get_volumetric_roi_measurement_groups()
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        values = {m.unit.value: m.value for m in group.get_measurements()}
        assert values == {"ml": v["infection_ml"], "%": v["lung_involvement_percent"]}, v["name"]
        (lungs,) = sr.content.get_image_measurement_groups()
        assert [m.value for m in lungs.get_measurements()] == [v["lung_ml"]]


def test_report_html_in_headless_chromium(real_run, tmp_path):
    _, out, summary = real_run
    check = open_page(out / "report.html", tmp_path / "browser")
    assert check.problems == []
    assert check.rows == [v["name"] for v in summary["volumes"]]
    shown = {(name, kind) for name, kind, w, h in check.images if w >= 400}
    for v in summary["volumes"]:
        if v["status"] == "ok":
            kinds = ("montage", "reformats", "curve") if through_plane_views(v["n_slices"]) else ("montage",)
            assert {(v["name"], k) for k in kinds} <= shown, v["name"]
    assert check.sortable == "ready" and sorted(check.sorted_rows) == sorted(check.rows)
