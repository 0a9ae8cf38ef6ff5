"""``covseg infer`` under torchrun: each of two gloo ranks takes a share, rank 0 writes one combined report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from covseg.engines.inference.distributed import Shard
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom


def test_shard_take_and_gather_keep_input_order():
    items = list(range(7))
    shares = [Shard(rank, 3).take(items) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shares, [])) == items


@pytest.mark.slow
def test_torchrun_infer_shards_volumes_and_combines_reports(tmp_path):
    inputs = tmp_path / "in"
    for seed in range(3):
        phantom = make_chest_phantom(shape=(8, 48, 48), spacing=(7.0, 7.0, 12.0), seed=seed)
        write_phantom(inputs / f"case{seed}.nii.gz", phantom)
    cts = sorted(inputs.glob("case*.nii.gz"))
    cts = [p for p in cts if nib.load(p).get_fdata().min() < -500]  # CT files only, not the label maps
    assert len(cts) == 3
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "covseg",
           "infer", *map(str, cts), "--out", str(out), "--model", "unet", "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["n_volumes"] == 3 and summary["n_ok"] == 3
    assert [v["name"] for v in summary["volumes"]] == [p.name.replace(".nii.gz", "") for p in cts]
    for ct in cts:
        mask = nib.load(out / ct.name.replace(".nii.gz", "") / "infection_mask.nii.gz")
        assert np.allclose(mask.affine, nib.load(ct).affine)
