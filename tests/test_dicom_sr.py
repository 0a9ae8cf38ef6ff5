"""DICOM-SR (``infection_sr.dcm``) written by the export beside the DICOM-SEG of a phantom series: it references the
SEG's segments and the source series, holds report.json's volumes and lung shares per segment (binary and
multi-class) and the lung volume; a patient without a SEG gets no SR; an SR highdicom refuses is a warning."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from covseg.engines.inference.export import export_volume
from covseg.engines.inference.outputs import ExportOptions, VolumeOutputs
from covseg.engines.inference.volume import VolumeInference
from covseg.io.read import read_volume
from covseg.reports.volume import build_volume_report
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_phantom_dicom

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
MODEL = {"name": "test-model", "version": "1.2"}


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((12, 48, 48), (7.0, 7.0, 10.0), seed=2)


@pytest.fixture(scope="module")
def series(tmp_path_factory, phantom) -> Path:
    folder = tmp_path_factory.mktemp("sr") / "series"
    write_phantom_dicom(folder, phantom)
    return folder


def _export(out: Path, phantom, series: Path, *, multiclass: bool = False, extras: dict | None = None) -> Path:
    """The export of the phantom's own masks (as if a model had found them); returns the volume's folder."""
    volume = read_volume(series)
    classes = phantom.lesion_classes if multiclass else None
    n_classes = 3 if multiclass else 1
    result = VolumeInference(lung=phantom.lung_labels, prob=phantom.infection.astype(np.float32),
                             infection=phantom.infection, predicted=np.ones(phantom.hu.shape[0], bool),
                             classes=classes, n_classes=n_classes)
    report = build_volume_report(volume.name, volume.source_path, phantom.lung_labels, phantom.infection,
                                 volume.spacing, classes=classes, n_classes=n_classes, model=MODEL)
    item = VolumeOutputs(volume=volume, result=result, report=report, rows=[], final_dir=out / volume.name,
                         extras=extras or {})
    return export_volume(item, ExportOptions())


def _measurements(group) -> dict[str, float]:
    return {m.unit.value: m.value for m in group.get_measurements()}


def _check_references(folder: Path, series: Path) -> tuple[hd.sr.Comprehensive3DSR, pydicom.Dataset]:
    """The SR is a TID 1500 report in the source's study, with the SEG and the source instances as evidence."""
    sr = hd.sr.srread(folder / "infection_sr.dcm")
    seg = pydicom.dcmread(folder / "infection_seg.dcm", stop_before_pixels=True)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == source.StudyInstanceUID == seg.StudyInstanceUID
    assert sr.PatientID == source.PatientID and sr.SeriesInstanceUID not in (seg.SeriesInstanceUID,
                                                                               source.SeriesInstanceUID)
    evidence = {(series_uid, sop_uid) for _, series_uid, sop_uid, _ in sr.get_evidence()}
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) in evidence
    assert (source.SeriesInstanceUID, source.SOPInstanceUID) in evidence
    assert len(evidence) == 1 + len(list(series.iterdir()))  # the SEG and every source slice
    for group in sr.content.get_volumetric_roi_measurement_groups():
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.source_series_for_segmentation.value == source.SeriesInstanceUID
    return sr, seg


def test_binary_sr_holds_the_report_numbers_and_references_seg_and_series(tmp_path, phantom, series):
    folder = _export(tmp_path, phantom, series)
    report = json.loads((folder / "report.json").read_text())
    assert report["outputs"]["dicom_sr"] == "infection_sr.dcm" and report["outputs"]["dicom_seg"] == "infection_seg.dcm"
    assert not [w for w in report["warnings"] if "DICOM" in w]
    sr, seg = _check_references(folder, series)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_segment_numbers == [1] and group.tracking_identifier == "Infection"
    assert group.finding_type.value == seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue
    assert report["infection_ml"] > 0 and report["lung_involvement_percent"] > 0
    # the SR holds report.json's numbers as written there (rounded to 3 decimals), exactly
    assert _measurements(group) == {"ml": report["infection_ml"], "%": report["lung_involvement_percent"]}
    (lungs,) = sr.content.get_image_measurement_groups()
    assert lungs.tracking_identifier == "Lungs" and _measurements(lungs) == {"ml": report["lung_ml"]}
    plain = pydicom.dcmread(folder / "infection_sr.dcm")  # plain pydicom reads it too
    assert plain.ContentSequence and plain.SeriesNumber == seg.SeriesNumber + 1


def test_multiclass_sr_has_one_group_per_class(tmp_path, phantom, series):
    folder = _export(tmp_path, phantom, series, multiclass=True)
    report = json.loads((folder / "report.json").read_text())
    sr, _ = _check_references(folder, series)
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert list(groups) == ["Ground-glass opacity", "Consolidation"]
    for number, (label, name) in enumerate((("Ground-glass opacity", "ggo"), ("Consolidation", "consolidation")),
                                           start=1):
        volumes = report["class_volumes"][name]
        assert volumes["ml"] > 0
        assert groups[label].referenced_segment.referenced_segment_numbers == [number]
        assert _measurements(groups[label]) == {"ml": volumes["ml"], "%": volumes["lung_percent"]}


def test_no_seg_no_sr(tmp_path, phantom, series):
    """A patient ``covseg diagnose`` classified negative gets no SEG, hence no SR."""
    folder = _export(tmp_path, phantom, series, extras={"diagnosis": {"segmented": False}})
    report = json.loads((folder / "report.json").read_text())
    assert not (folder / "infection_seg.dcm").exists() and not (folder / "infection_sr.dcm").exists()
    assert "dicom_seg" not in report["outputs"] and "dicom_sr" not in report["outputs"]


def test_an_sr_highdicom_refuses_is_a_warning(tmp_path, phantom, series, monkeypatch):
    import covseg.io.dicom_sr as dicom_sr

    def refuse(*args, **kwargs):
        raise ValueError("some value highdicom refuses")

    monkeypatch.setattr(dicom_sr.hd.sr, "Comprehensive3DSR", refuse)
    folder = _export(tmp_path, phantom, series)
    report = json.loads((folder / "report.json").read_text())
    assert (folder / "infection_seg.dcm").is_file() and not (folder / "infection_sr.dcm").exists()
    assert "dicom_sr" not in report["outputs"] and "infection_mask" in report["outputs"]
    assert [w for w in report["warnings"] if w.startswith("DICOM-SR not written:")] == [
        f"DICOM-SR not written: {series}: DICOM-SR cannot be built from the DICOM-SEG (some value highdicom refuses)"]
