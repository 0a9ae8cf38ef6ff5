"""``covseg infer`` on the real CT volumes (skipped when /work/shared/data/ct-volumes is absent).

Every folder holds CT volumes (NIfTI and DICOM) next to label maps; the label maps are refused one line each
(exit 1), the CTs get masks that overlay them exactly and a report that says where lungs are missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from utils import sitk_geometry, use_tiny_default_model

from covseg.cli.main import main

FOLDERS = ("chest-cip64", "chest-2slice", "abdomen-totalseg")
LUNG_WARNINGS = ("no lung found", "slices contain lung", "lung volume is only")


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch, one_torch_thread):
    """A tiny untrained U-Net at 32x32 as the default model, one torch thread (geometry is what is tested)."""
    use_tiny_default_model(monkeypatch)


@pytest.mark.parametrize("folder", FOLDERS)
def test_infer_real_folder(folder, ct_volumes_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["infer", str(ct_volumes_dir / folder), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    failed = [v for v in summary["volumes"] if v["status"] != "ok"]
    ok = [v for v in summary["volumes"] if v["status"] == "ok"]
    # only the label maps are refused, each with one error line
    assert all(any(k in Path(v["source"]).name for k in ("seg", "mask", "labelmap")) for v in failed)
    assert all("does not look like CT" in v["error"] for v in failed)
    assert code == (1 if failed else 0)
    assert len([e for e in captured.err.splitlines() if e.startswith("error: ")]) == len(failed)
    assert ok and {p.name for p in out.iterdir() if p.is_dir()} == {v["name"] for v in ok}
    for v in ok:
        vdir = out / v["name"]
        report = json.loads((vdir / "report.json").read_text())
        source = Path(report["source"])
        for name in ("infection_mask", "lung_mask"):
            written = vdir / f"{name}.nii.gz"
            if source.is_file():  # NIfTI input: nibabel's affine is reproduced exactly
                ref = nib.load(str(source))
                got = nib.load(str(written))
                assert got.shape == ref.shape
                np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
            else:  # DICOM series: the series' geometry as SimpleITK reads it
                reader = sitk.ImageSeriesReader()
                files = sorted(str(p) for p in source.iterdir())
                reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source)) or files)
                ref_geo = sitk_geometry(reader.Execute())
                got_geo = sitk_geometry(sitk.ReadImage(str(written)))
                assert got_geo[0] == ref_geo[0]
                for a, b in zip(got_geo[1:], ref_geo[1:]):
                    np.testing.assert_allclose(a, b, atol=1e-3)
        assert (vdir / "slices.csv").exists()
        if folder == "abdomen-totalseg":  # lung bases only: the report says so
            assert any(any(w in warning for w in LUNG_WARNINGS) for warning in report["warnings"]), report["warnings"]
        if folder == "chest-cip64":  # a whole chest: both lungs, litres
            assert report["right_lung_ml"] > 1500 and report["left_lung_ml"] > 1500
            assert not any("slices contain lung" in w or "no lung" in w for w in report["warnings"])
