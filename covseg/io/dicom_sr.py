"""DICOM-SR output (highdicom): the volumes measured on the segments of covseg's DICOM-SEG, as a TID 1500
Measurement Report (Comprehensive 3D SR) that references that SEG and the CT series it was computed from.

Made from the SEG file just written (:mod:`covseg.io.dicom_seg`) and the numbers of ``report.json``:

* Patient and study: copied from the SEG (which copied them from the source series, completing and cleaning
  them there), so SR, SEG and CT share one patient and study. A new series beside the SEG's (its
  SeriesNumber + 1).
* Evidence (Current Requested Procedure Evidence Sequence): the SEG and every source CT instance it references.
* One TID 1411 Volumetric ROI group per segment: tracking identifier = the segment label, a Referenced Segment
  (the SEG's SOPInstanceUID and segment number, with the source SeriesInstanceUID), finding type / category /
  site = the segment's property type / category / anatomic region, the algorithm, and two measurements:
  Volume (SCT 118565006) in ``ml`` and Volume Ratio (DCM 113288) in ``%``: the segment's share of the lung.
* One TID 1501 group "Lungs" (finding type Lung, SCT 39607008) with the whole-lung Volume in ``ml``: the lung mask
  is not a SEG segment, so that group references no ROI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from covseg.io.atomic import atomic_path
from covseg.io.dicom_derived import AI_FAMILY, algorithm_name_version, highdicom_build
from covseg.io.errors import CovsegInputError

__all__ = ["ML", "PERCENT", "write_dicom_sr"]

ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
_VOLUME = codes.SCT.Volume  # SCT 118565006
_SHARE = codes.DCM.VolumeRatio  # DCM 113288: the segment's volume in the lung / the lung volume
_LUNG = codes.SCT.Lung  # SCT 39607008


def write_dicom_sr(seg_path: str | Path, path: str | Path, measures: Mapping[int, tuple[float, float]],
                   lung_ml: float, *, source: str | Path, model: dict | None = None,
                   software_version: str = "") -> Path:
    """Write the Measurement Report of the SEG at ``seg_path`` to ``path`` (atomically) and return ``path``.

    ``measures``: segment number -> (volume in mL, percent of the lung volume); ``lung_ml``: the whole-lung
    volume; ``source``: the input, named in errors; ``model``: ``{"name", "version"}`` of the algorithm.
    A SEG that cannot be read, a segment without a measure or a value highdicom refuses raise
    :class:`CovsegInputError`.
    """
    try:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise CovsegInputError(seg_path, f"DICOM-SEG cannot be read for the DICOM-SR ({exc})") from None
    name, version = algorithm_name_version(model, software_version)
    with highdicom_build(source, "DICOM-SR cannot be built from the DICOM-SEG"):
        algorithm = hd.sr.AlgorithmIdentification(name=name, version=version, family=AI_FAMILY)
        groups = [_segment_group(seg, item, measures, algorithm) for item in seg.SegmentSequence]
        groups.append(_lung_group(seg, lung_ml, algorithm))
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[name, version, "device"]), name=name[:64], manufacturer_name="covseg",
            model_name=name[:64])
        context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device))
        report = hd.sr.MeasurementReport(observation_context=context,
                                         procedure_reported=codes.cid100.CTUnspecifiedBodyRegion,
                                         imaging_measurements=groups)
        number = int(seg.SeriesNumber)
        sr = hd.sr.Comprehensive3DSR(
            evidence=[seg, *_source_instances(seg)], content=report, series_instance_uid=generate_uid(),
            series_number=number + 1 if number + 1 < 2**31 else number - 1, sop_instance_uid=generate_uid(),
            instance_number=1, manufacturer="covseg", is_complete=True,
            series_description=f"covseg measurements ({name})"[:64],
            manufacturer_model_name=name[:64], software_versions=f"covseg {software_version}".strip())
    path = Path(path)
    with atomic_path(path) as tmp:
        sr.save_as(tmp)
    return path


def _segment_group(
    seg: pydicom.Dataset, item: pydicom.Dataset, measures: Mapping[int, tuple[float, float]],
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group of one SEG segment: its volume (mL) and its share of the lung (%)."""
    number = int(item.SegmentNumber)
    if number not in measures:
        raise ValueError(f"no measurement for segment {number} ({item.SegmentLabel})")
    ml, percent = measures[number]
    source_series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series))
    concept = hd.sr.CodedConcept.from_dataset
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(seg.SOPInstanceUID), str(number)]), identifier=str(item.SegmentLabel)),
        referenced_segment=segment, algorithm_id=algorithm,
        finding_type=concept(item.SegmentedPropertyTypeCodeSequence[0]),
        finding_category=concept(item.SegmentedPropertyCategoryCodeSequence[0]),
        finding_sites=[hd.sr.FindingSite(concept(region)) for region in item.get("AnatomicRegionSequence", [])],
        measurements=[hd.sr.Measurement(name=_VOLUME, value=float(ml), unit=ML),
                      hd.sr.Measurement(name=_SHARE, value=float(percent), unit=PERCENT)])


def _lung_group(seg: pydicom.Dataset, lung_ml: float,
                algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group of the whole-lung volume (mL)."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(seg.SOPInstanceUID), "lungs"]), identifier="Lungs"),
        finding_type=_LUNG, algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=_VOLUME, value=float(lung_ml), unit=ML)])


def _source_instances(seg: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The source CT instances the SEG references, as the UIDs highdicom records as evidence."""
    out = []
    for series in seg.ReferencedSeriesSequence:
        for ref in series.ReferencedInstanceSequence:
            ds = pydicom.Dataset()
            ds.StudyInstanceUID = seg.StudyInstanceUID
            ds.SeriesInstanceUID = series.SeriesInstanceUID
            ds.SOPClassUID = ref.ReferencedSOPClassUID
            ds.SOPInstanceUID = ref.ReferencedSOPInstanceUID
            out.append(ds)
    return out
