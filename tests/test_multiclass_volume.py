"""Volume inference with a prior-guided multi-class model: a 0/1/2 label map in the input's geometry and
per-class volumes and scores in report.json, checked on a phantom with known GGO and consolidation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from covseg.engines.inference.batch import run_batch
from covseg.networks.multiclass import PriorGuidedSegmenter
from covseg.synthetic.phantom import CONSOLIDATION, GGO, make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom
from covseg.transforms.intensity import window_hu

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class DensityPrior(nn.Module):
    """'Infection' wherever the windowed slice is denser than -650 HU."""

    def forward(self, x):
        return (x - float(window_hu(-650.0))) * 80.0


class DensityHead(nn.Module):
    """Background from the prior channel; consolidation above -300 HU (denser than any GGO core), GGO below:
    an intensity oracle."""

    out_channels = 3

    def forward(self, x):
        grey, prior = x[:, :1], x[:, 1:2]
        return torch.cat([(0.5 - prior) * 40.0, torch.zeros_like(grey), (grey - float(window_hu(-300.0))) * 200.0], 1)


def test_phantom_lesions_get_their_class_and_the_report_matches_the_maps(tmp_path):
    phantom = make_chest_phantom(shape=(16, 128, 128), spacing=(2.8, 2.8, 10.0), seed=4, n_ggo=3, n_consolidation=2)
    paths = write_phantom(tmp_path / "in" / "case.nii.gz", phantom, orientation="RAS")
    labels = tmp_path / "labels"
    labels.mkdir()
    paths["lesion_classes"].rename(labels / "case.nii.gz")  # a 0/1/2 reference label
    model = PriorGuidedSegmenter(DensityPrior(), DensityHead(), prior_size=32)
    results = run_batch([paths["ct"]], tmp_path / "out", model, labels_dir=labels, image_size=128, bf16=False,
                        lung_margin_mm=0.0)
    assert results[0].report is not None, results
    folder = tmp_path / "out" / "case"
    written = nib.load(str(folder / "infection_labels.nii.gz"))
    source = nib.load(str(paths["ct"]))
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)  # the input's geometry (stored RAS)
    classes = np.asarray(written.dataobj)
    assert classes.shape == source.shape and set(np.unique(classes)) <= {0, 1, 2}
    truth = np.asarray(nib.load(str(labels / "case.nii.gz")).dataobj)
    for k in (GGO, CONSOLIDATION):
        assert (truth == k).sum() > 30
        assert np.mean(classes[truth == k] == k) > 0.75, k  # fuzzy lesion edges blend into other densities

    report = json.loads((folder / "report.json").read_text())
    voxel_ml = float(np.prod(phantom.spacing)) / 1000.0
    lung = np.asarray(nib.load(str(folder / "lung_mask.nii.gz")).dataobj)
    for k, name in ((1, "ggo"), (2, "consolidation")):
        vol = report["class_volumes"][name]
        assert vol["ml"] == pytest.approx((classes == k).sum() * voxel_ml, abs=1e-3)
        assert vol["right_ml"] + vol["left_ml"] == pytest.approx(((classes == k) & (lung > 0)).sum() * voxel_ml,
                                                                 abs=2e-3)
        assert vol["lung_percent"] == pytest.approx(100 * ((classes == k) & (lung > 0)).sum() / (lung > 0).sum(),
                                                    abs=1e-3)
        pred, gt = classes == k, truth == k
        tp = int((pred & gt).sum())
        scores = report["class_metrics"][name]
        assert scores["dice"] == pytest.approx(2 * tp / (pred.sum() + gt.sum()), abs=1e-6)
        assert scores["sensitivity"] == pytest.approx(tp / gt.sum(), abs=1e-6)
        assert scores["precision"] == pytest.approx(tp / pred.sum(), abs=1e-6)
        assert scores["mae"] == pytest.approx(np.mean(pred != gt), abs=1e-6)


@pytest.mark.slow
def test_covseg_infer_with_the_shipped_bundle_writes_a_label_map(tmp_path):
    import subprocess
    import sys

    from utils import REPO

    bundle = REPO / "bundles" / "multiclass_infnet"
    if not (bundle / "models" / "model.pt").exists():
        pytest.skip("bundles/multiclass_infnet has no weights")
    phantom = make_chest_phantom(shape=(8, 128, 128), spacing=(2.8, 2.8, 10.0), seed=5)
    ct = write_phantom(tmp_path / "in" / "case.nii.gz", phantom, orientation="RAS")["ct"]
    proc = subprocess.run([sys.executable, "-m", "covseg", "infer", str(ct), "--bundle", str(bundle), "--out",
                           str(tmp_path / "out"), "--threads", "1", "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "out" / "case"
    labels = nib.load(str(folder / "infection_labels.nii.gz"))
    np.testing.assert_allclose(labels.affine, nib.load(str(ct)).affine, atol=1e-4)
    classes = np.asarray(labels.dataobj)
    infection = np.asarray(nib.load(str(folder / "infection_mask.nii.gz")).dataobj)
    assert classes.shape == infection.shape and set(np.unique(classes)) <= {0, 1, 2}
    np.testing.assert_array_equal(classes > 0, infection > 0)
    report = json.loads((folder / "report.json").read_text())
    assert report["model"]["name"] == "multiclass_infnet"
    assert report["model"]["tta"] is True  # the bundle's chain averages over flips (its covseg section)
    total = sum(v["ml"] for v in report["class_volumes"].values())
    assert total == pytest.approx(report["infection_ml"], abs=1e-2)
