"""Reports with hand-checkable numbers: mL from voxel counts x spacing, slice counts, warnings, CSV/JSON, table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from covseg.reports import VolumeResult, build_volume_report, format_console_table, slice_rows, slices_csv_text
from covseg.reports.batch import SUMMARY_COLUMNS, write_batch_report

SPACING = (2.0, 2.0, 5.0)  # x, y, z mm -> 20 mm^3 = 0.02 mL per voxel


def _arrays():
    lung = np.zeros((4, 10, 10), np.uint8)
    lung[1:3, 2:7, 1:4] = 1  # right: 2 slices x 5 x 3 = 30 voxels
    lung[1:3, 2:7, 6:9] = 2  # left: 30 voxels
    lung[3, 2:4, 6:8] = 2  # +4 left voxels on slice 3
    inf = np.zeros_like(lung)
    inf[1, 2:4, 1:3] = 1  # 4 voxels in the right lung, slice 1
    inf[2, 2, 6] = 1  # 1 voxel in the left lung, slice 2
    inf[2, 0, 0] = 1  # 1 voxel outside the lung (margin)
    prob = inf.astype(np.float32) * 0.9
    return lung, inf, prob


def test_volumes_and_counts_are_voxel_counts_times_spacing():
    lung, inf, prob = _arrays()
    rep = build_volume_report("v", "v.nii.gz", lung, inf, SPACING, prob=prob, predicted_slices=3,
                              timing_s={"total": 1.23456})
    assert rep.voxel_ml == pytest.approx(0.02)
    assert rep.right_lung_ml == pytest.approx(30 * 0.02)
    assert rep.left_lung_ml == pytest.approx(34 * 0.02)
    assert rep.lung_ml == pytest.approx(64 * 0.02)
    assert rep.infection_ml == pytest.approx(6 * 0.02)
    assert rep.right_infection_ml == pytest.approx(4 * 0.02)
    assert rep.left_infection_ml == pytest.approx(1 * 0.02)
    assert rep.lung_involvement_percent == pytest.approx(100 * 5 / 64, abs=1e-3)
    assert (rep.n_slices, rep.lung_slices, rep.infected_slices, rep.predicted_slices) == (4, 3, 2, 3)
    assert rep.metrics is None
    assert rep.timing_s["total"] == 1.235
    # 3 lung slices is below the 5-slice minimum, 1.28 mL below 1000 mL
    assert any("only 3 of 4 slices contain lung" in w for w in rep.warnings)
    assert any("lung volume is only 1 mL" in w for w in rep.warnings)
    d = json.loads(rep.to_json())
    assert d["shape_zyx"] == [4, 10, 10] and d["status"] == "ok"


def test_coarse_in_plane_pixels_get_a_warning_when_there_is_lung():
    lung, inf, prob = _arrays()
    assert not any("in-plane pixels" in w for w in build_volume_report("v", "v", lung, inf, SPACING).warnings)
    coarse = build_volume_report("v", "v", lung, inf, (2.5, 4.17, 1.0)).warnings
    assert [w for w in coarse if "in-plane pixels" in w] == [
        "in-plane pixels of 4.2 mm, far coarser than the chest CT the models were trained on (under 1 mm): blurred "
        "vessels tend to be marked as infection"]
    empty = np.zeros((3, 8, 8), np.uint8)  # no lung: nothing is segmented, so no word on the pixels
    assert not any("in-plane" in w for w in build_volume_report("e", "e", empty, empty, (4.0, 4.0, 4.0)).warnings)


def test_no_lung_warning_and_zero_involvement():
    empty = np.zeros((3, 8, 8), np.uint8)
    rep = build_volume_report("e", "e", empty, empty, SPACING)
    assert rep.lung_ml == 0 and rep.lung_involvement_percent == 0.0
    assert rep.warnings[0].startswith("no lung found")


def test_metrics_against_label():
    lung, inf, prob = _arrays()
    label = np.zeros_like(inf)
    label[1, 2:4, 1:3] = 1  # the 4 right-lung voxels
    label[1, 5, 5] = 1  # one missed voxel
    rep = build_volume_report("v", "v", lung, inf, SPACING, prob=prob, label=label, label_path="l.nii.gz")
    m = rep.metrics
    # tp 4, fp 2, fn 1, tn 400 - 7
    assert m["dice"] == pytest.approx(8 / 11, abs=1e-6)
    assert m["sensitivity"] == pytest.approx(4 / 5, abs=1e-6)
    assert m["precision"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["specificity"] == pytest.approx(393 / 395, abs=1e-6)
    # |p - g|: 4 x 0.1 + 2 x 0.9 + 1 x 1 over 400 voxels
    assert m["mae"] == pytest.approx((0.4 + 1.8 + 1.0) / 400, abs=1e-6)
    assert rep.label == "l.nii.gz"


def test_class_volumes():
    lung, inf, _ = _arrays()
    classes = np.zeros_like(inf)
    classes[1, 2:4, 1:3] = 1
    classes[2, 2, 6] = 2
    rep = build_volume_report("v", "v", lung, inf, SPACING, classes=classes, n_classes=3)
    assert rep.class_ml == {"1": pytest.approx(0.08), "2": pytest.approx(0.02)}


def test_slice_rows_and_csv():
    lung, inf, prob = _arrays()
    rows = slice_rows(lung, inf, prob, predicted=[False, True, True, True])
    assert [r["lung_px"] for r in rows] == [0, 30, 30, 4]
    assert [r["right_px"] for r in rows] == [0, 15, 15, 0]
    assert [r["infection_px"] for r in rows] == [0, 4, 2, 0]
    assert rows[0]["mean_prob"] is None
    assert rows[1]["mean_prob"] == pytest.approx(4 * 0.9 / 30)
    text = slices_csv_text(rows)
    parsed = list(csv.DictReader(text.splitlines()))
    assert parsed[0]["mean_prob"] == "" and parsed[1]["mean_prob"] == "0.1200" and parsed[1]["predicted"] == "1"



def test_slice_rows_count_each_class_and_the_curve_draws_them():
    """A multi-class label map adds ggo_px / consolidation_px to every slice row and to slices.csv; the curve draws
    each class in its overlay colour (the binary curve has neither colour)."""
    import io

    from PIL import Image

    from covseg.reports.curves import infection_curve_png
    from covseg.reports.pictures.contours import CLASS_COLOURS
    from covseg.reports.volume import class_columns

    lung, inf, _ = _arrays()
    classes = np.zeros(lung.shape, np.uint8)
    classes[1, 2:4, 1:3] = 1
    classes[2, 2, 6] = 2
    classes[2, 3, 6] = 1
    rows = slice_rows(lung, classes > 0, classes=classes, n_classes=3)
    assert class_columns(3) == ["ggo_px", "consolidation_px"]
    assert [r["ggo_px"] for r in rows] == [0, 4, 1, 0] and [r["consolidation_px"] for r in rows] == [0, 0, 1, 0]
    parsed = list(csv.DictReader(slices_csv_text(rows).splitlines()))
    assert parsed[2]["consolidation_px"] == "1" and parsed[1]["ggo_px"] == "4"
    assert "ggo_px" not in slice_rows(lung, inf)[0]

    def has_colour(png: bytes, rgb) -> bool:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
        return bool((np.abs(pixels - np.asarray(rgb) * 0.85).max(axis=1) <= 3).any())

    multi = infection_curve_png(rows, SPACING, class_columns=class_columns(3), dpi=60)
    binary = infection_curve_png(rows, SPACING, dpi=60)
    for rgb in CLASS_COLOURS.values():
        assert has_colour(multi, rgb) and not has_colour(binary, rgb)


def test_the_multi_class_curve_shows_the_total_where_one_class_is_all_of_it():
    """On a multi-class scan most slices hold ground glass only: the red total, drawn first and as thin as the
    yellow ground-glass line, lay hidden under it, and the key's red 'infection' was nowhere in the plot."""
    import io

    from PIL import Image

    from covseg.reports.curves import infection_curve_png

    rows = [{"slice": z, "lung_px": 3000, "infection_px": 200 + 10 * (z % 7), "ggo_px": 200 + 10 * (z % 7),
             "consolidation_px": 0} for z in range(40)]
    rgb = np.asarray(Image.open(io.BytesIO(infection_curve_png(
        rows, (1.0, 1.0, 5.0), class_columns=("ggo_px", "consolidation_px")))).convert("RGB")).astype(int)
    red = np.abs(rgb - np.array([214, 39, 40])).max(axis=2) <= 30  # #d62728
    assert red.sum() > 600  # the total's line along the whole plot (the axis label and the key: about 130 pixels)


def test_batch_summary_and_table(tmp_path):
    lung, inf, prob = _arrays()
    rep = build_volume_report("good", "good.nii.gz", lung, inf, SPACING, prob=prob, timing_s={"total": 2.0})
    results = [VolumeResult("good", "good.nii.gz", report=rep, out_dir=str(tmp_path / "good")),
               VolumeResult("bad", "bad.nii.gz", status="error", error="bad.nii.gz: file is empty")]
    json_path, csv_path = write_batch_report(results, tmp_path, meta={"model": "unet"})
    summary = json.loads(json_path.read_text())
    assert (summary["n_volumes"], summary["n_ok"], summary["n_failed"]) == (2, 1, 1)
    assert summary["model"] == "unet"
    assert summary["volumes"][1] == {"name": "bad", "source": "bad.nii.gz", "status": "error",
                                     "error": "bad.nii.gz: file is empty"}
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    assert tuple(rows[0]) == SUMMARY_COLUMNS and all(len(r) == len(SUMMARY_COLUMNS) for r in rows)
    assert rows[1][SUMMARY_COLUMNS.index("lung_ml")] == "1.28"
    table = format_console_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("volume") and "FAILED" in lines[3]
    assert "1.3" in lines[2] and "2/3/4" in lines[2]
    assert "bad: error: bad.nii.gz: file is empty" in table
    assert len({len(lines[0]), len(lines[1])}) == 1  # header and rule aligned


@pytest.mark.parametrize("garbage", ['{"volumes": [', "[1, 2]", "\x00\x01"])
def test_an_unreadable_summary_is_kept_aside_with_a_warning(tmp_path, garbage, caplog):
    lung, inf, prob = _arrays()
    rep = build_volume_report("good", "good.nii.gz", lung, inf, SPACING, prob=prob, timing_s={"total": 2.0})
    (tmp_path / "summary.json").write_text(garbage)
    with caplog.at_level("WARNING", logger="covseg"):
        json_path, _ = write_batch_report([VolumeResult("good", "good.nii.gz", report=rep,
                                                        out_dir=str(tmp_path / "good"))], tmp_path)
    assert json.loads(json_path.read_text())["n_ok"] == 1
    kept = sorted(tmp_path.glob("summary.unreadable-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == garbage
    assert [r.getMessage() for r in caplog.records if kept[0].name in r.getMessage()], caplog.text
    (tmp_path / "summary.json").write_text(garbage)  # a second one in the same second: never overwritten
    write_batch_report([], tmp_path)
    assert len(list(tmp_path.glob("summary.unreadable-*.json"))) == 2
    write_batch_report([], tmp_path)  # a readable summary: nothing moved aside
    assert len(list(tmp_path.glob("summary.unreadable-*.json"))) == 2


def test_slice_counts_equal_the_full_volume_counts():
    """The slice-by-slice counts behind the report, slice table and severity equal counts over whole volumes."""
    from covseg.reports.counts import slice_counts

    rng = np.random.default_rng(0)
    lung = rng.integers(0, 3, (7, 9, 11)).astype(np.uint8)
    infection = (rng.random((7, 9, 11)) > 0.6).astype(np.uint8)
    counts = slice_counts(lung, infection)

    def per_slice(mask: np.ndarray) -> np.ndarray:
        return np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)

    inf = infection > 0
    np.testing.assert_array_equal(counts.lung, per_slice(lung > 0))
    np.testing.assert_array_equal(counts.right, per_slice(lung == 1))
    np.testing.assert_array_equal(counts.left, per_slice(lung == 2))
    np.testing.assert_array_equal(counts.infection, per_slice(inf))
    np.testing.assert_array_equal(counts.right_infection, per_slice(inf & (lung == 1)))
    np.testing.assert_array_equal(counts.left_infection, per_slice(inf & (lung == 2)))
    with pytest.raises(ValueError, match="differs"):
        slice_counts(lung, infection[:, :, :5])


def test_a_label_holding_lungs_and_infection_is_warned_about():
    """COVID-19-CT-Seg's lung-and-infection masks (1, 2 lungs, 3 infection) given as --labels: every non-zero voxel
    would be scored as infection, silently. A 0 / 255 mask, a 0/1/2 class map and, for a multi-class model, its own
    classes are read as meant: no warning."""
    lung = np.zeros((2, 8, 8), np.uint8)
    lung[:, 1:7, 1:4], lung[:, 1:7, 4:7] = 1, 2
    infection = np.zeros_like(lung)
    infection[:, 2:4, 2:4] = 1
    both = lung.copy()
    both[infection > 0] = 3

    def warned(label, **kwargs) -> list[str]:
        rep = build_volume_report("v", "/x", lung, infection, (1.0, 1.0, 1.0), label=label, **kwargs)
        return [w for w in rep.warnings if w.startswith("label holds values")]

    assert warned(both) and "1, 2, 3" in warned(both)[0] and "--label-values" in warned(both)[0]
    assert not warned(infection * 255) and not warned(infection) and not warned(np.where(infection > 0, lung, 0))
    classes = np.where(infection > 0, 1, 0).astype(np.uint8)
    assert not warned(np.where(infection > 0, lung, 0), classes=classes, n_classes=3)
    assert "the classes are 1..2" in warned(both, classes=classes, n_classes=3)[0]
    many = np.where(lung > 0, np.arange(lung.size).reshape(lung.shape) % 20 + 1, 0)  # a 20-structure atlas
    assert warned(many)[0].startswith("label holds values 1, 2, 3, 4, 5, 6, 7, 8, … (20 values): every")


def test_label_values_score_a_lung_and_infection_label_as_the_infection_alone():
    """A phantom's label in COVID-19-CT-Seg's layout (1, 2 lungs, 3 infection), scored against the true infection:
    as it is, the lungs count as infection (a warning, poor Dice); with the infection's value given
    (``covseg infer --label-values 3``) the scores are those of the infection-only label, without the warning, and
    report.json says which values were scored. A value that never occurs is one warning naming the file."""
    from covseg.reports.label_scores import LabelValues
    from covseg.synthetic.phantom import make_chest_phantom

    ph = make_chest_phantom(shape=(10, 64, 64), spacing=(5.0, 5.0, 8.0), seed=4)
    lung, infection = ph.lung_labels, ph.infection
    both = np.where(infection > 0, 3, lung).astype(np.uint8)

    def report(label, **kwargs):
        return build_volume_report("v", "/x", lung, infection, ph.spacing, prob=infection * 0.8, label=label,
                                   label_path="/labels/v.nii.gz", **kwargs)

    plain, alone, given = report(both), report(infection), report(both, label_values=LabelValues((3,)))
    assert any(w.startswith("label holds values 1, 2, 3") and "with --label-values V[,V]" in w
               for w in plain.warnings)
    assert plain.metrics["dice"] < 0.5 and plain.label_values == [1, 2, 3]
    assert given.metrics == alone.metrics and given.metrics["dice"] == 1.0
    assert not [w for w in given.warnings if "label" in w] and given.label_values == [3]
    assert json.loads(given.to_json())["label_values"] == [3] and alone.label_values == [1]
    absent = report(both, label_values=LabelValues((3, 4)))
    assert absent.metrics == alone.metrics
    assert [w for w in absent.warnings if "label" in w] == [
        "v.nii.gz: value 4 given by --label-values never occurs in the label (it holds 1, 2, 3)"]


def test_label_classes_give_the_per_class_scores_of_a_label_with_other_values():
    """A multi-class model against a label holding lungs (1, 2), GGO 3 and consolidation 4: with ``--label-classes
    3,4`` its per-class scores are those against the 0/1/2 class label, and report.json names the values."""
    from covseg.reports.label_scores import LabelValues
    from covseg.synthetic.phantom import make_chest_phantom

    ph = make_chest_phantom(shape=(10, 64, 64), spacing=(5.0, 5.0, 8.0), seed=4, n_ggo=2, n_consolidation=2)
    lung, classes = ph.lung_labels, ph.lesion_classes
    assert set(np.unique(classes)) == {0, 1, 2}
    shifted = np.where(classes > 0, classes + 2, lung).astype(np.uint8)

    def report(label, **kwargs):
        return build_volume_report("v", "/x", lung, classes > 0, ph.spacing, label=label, classes=classes,
                                   n_classes=3, **kwargs)

    own, given = report(classes), report(shifted, label_values=LabelValues(classes=(3, 4)))
    assert own.label_classes == {"ggo": 1, "consolidation": 2} and own.class_metrics["ggo"]["dice"] == 1.0
    assert given.class_metrics == own.class_metrics and given.metrics == own.metrics
    assert given.label_classes == {"ggo": 3, "consolidation": 4} and given.label_values == [3, 4]
    assert not [w for w in given.warnings if "label" in w]
    assert any("the classes are 1..2" in w for w in report(shifted).warnings)
