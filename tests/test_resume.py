"""Resuming a batch (``--continue``): complete results of the same request are kept, anything else is computed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from covseg.cli.main import main
from covseg.engines.inference import dataset as dataset_mod
from covseg.engines.inference.batch import run_batch
from covseg.reports.volume import VolumeReport
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Constant(nn.Module):
    """Logits ``value`` everywhere (one channel)."""

    def __init__(self, value: float = 3.0) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Two small phantoms, a and b."""
    folder = tmp_path_factory.mktemp("resume-in")
    return [write_phantom(folder / f"{n}.nii.gz", make_chest_phantom(shape=(12, 48, 48), spacing=(6.0, 6.0, 10.0),
                                                                      seed=seed))["ct"]
            for n, seed in (("a", 1), ("b", 2))]


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The names of the volumes read from disk in this test."""
    seen: list[str] = []
    read = dataset_mod.read_volume

    def counting(source):  # noqa: ANN001, ANN202 - the wrapped function's own signature
        seen.append(Path(getattr(source, "path", source)).name)
        return read(source)

    monkeypatch.setattr(dataset_mod, "read_volume", counting)
    return seen


def _run(inputs, out, reads, **kw):
    reads.clear()
    return run_batch(inputs, out, Constant(), image_size=16, bf16=False, skip_done=True, **kw)


def test_complete_results_of_the_same_request_are_kept_unread(tmp_path, inputs, reads):
    first = _run(inputs, tmp_path, reads)
    assert [r.ok and not r.earlier for r in first] == [True, True] and sorted(reads) == ["a.nii.gz", "b.nii.gz"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*")}
    again = _run(inputs, tmp_path, reads)
    assert reads == [] and [r.earlier for r in again] == [True, True]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*")} == before  # nothing rewritten
    assert [r.report.to_dict() for r in again] == [r.report.to_dict() for r in first]
    assert [r.out_dir for r in again] == [r.out_dir for r in first] and again[0].key == first[0].key


def test_another_request_or_a_changed_input_is_computed_again(tmp_path, inputs, reads):
    _run(inputs, tmp_path, reads)
    assert [r.earlier for r in _run(inputs, tmp_path, reads, save_prob=True)] == [False, False]  # other outputs
    assert (tmp_path / "a" / "infection_prob.nii.gz").is_file()
    assert [r.earlier for r in _run(inputs, tmp_path, reads, save_prob=True)] == [True, True]
    stat = inputs[1].stat()
    os.utime(inputs[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # b changed since
    (tmp_path / "a" / "slices.csv").unlink()  # a lost an output
    results = _run(inputs, tmp_path, reads, save_prob=True)
    assert [r.earlier for r in results] == [False, False] and sorted(reads) == ["a.nii.gz", "b.nii.gz"]
    assert (tmp_path / "a" / "slices.csv").is_file()
    threshold = _run(inputs, tmp_path, reads, save_prob=True, threshold=0.9)  # other post-processing
    assert [r.earlier for r in threshold] == [False, False]


def test_without_skip_done_everything_is_computed_and_a_failure_is_retried(tmp_path, inputs, reads):
    run_batch(inputs, tmp_path, Constant(), image_size=16, bf16=False)
    reads.clear()
    run_batch(inputs, tmp_path, Constant(), image_size=16, bf16=False)
    assert sorted(reads) == ["a.nii.gz", "b.nii.gz"]
    bad = tmp_path / "in" / "c.nii.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"")
    assert [r.ok for r in _run([*inputs, bad], tmp_path, reads)] == [True, True, False]
    shutil.copy(inputs[0], bad)  # the failed input is good now
    results = _run([*inputs, bad], tmp_path, reads)
    assert [(r.ok, r.earlier) for r in results] == [(True, True), (True, True), (True, False)] and reads == ["c.nii.gz"]


def test_report_round_trips_through_its_dict(tmp_path, inputs, reads):
    (result,) = _run(inputs[:1], tmp_path, reads)
    on_disk = json.loads((tmp_path / "a" / "report.json").read_text())
    assert on_disk["request"]["input"]["key"] == str(inputs[0].resolve())
    assert on_disk["request"]["model"]["precision"] == "fp32" and "device" not in on_disk["request"]["model"]
    assert VolumeReport.from_dict(on_disk).to_dict() == result.report.to_dict()


def test_cli_continue_keeps_done_volumes_and_says_so(tmp_path, inputs, monkeypatch, capsys):
    from utils import use_tiny_default_model

    use_tiny_default_model(monkeypatch)
    out = tmp_path / "out"
    args = ["infer", *map(str, inputs), "--out", str(out), "--no-progress", "--no-figures"]
    assert main(args) == 0
    capsys.readouterr()
    (out / "b").rename(tmp_path / "b-moved")  # as if the first run had been killed before b
    assert main([*args, "--continue"]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line[:2] in ("a ", "b ")}
    assert rows == {"a": "earlier", "b": "ok"}
    assert "2 of 2 volume(s) done (1 kept from an earlier run)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(v["name"] for v in summary["volumes"]) == ["a", "b"]


def test_a_dicom_series_request_asks_for_the_sr_beside_the_seg(tmp_path):
    """A folder written before the DICOM-SR came with the SEG (its request without ``dicom_sr``) is made again by
    ``--continue``; the requests of other inputs, and of runs without the SEG, are unchanged."""
    from covseg.engines.inference.outputs import ExportOptions
    from covseg.engines.inference.resume import volume_request
    from covseg.engines.inference.volume import InfectionPostprocessing
    from covseg.io.source import VolumeSource

    ct = tmp_path / "s" / "1.dcm"
    ct.parent.mkdir()
    ct.write_bytes(b"x")
    series = VolumeSource("s", ct.parent, "dicom", files=[ct])
    nifti = VolumeSource("n", ct, "nifti")

    def outputs(src: VolumeSource, **options: object) -> dict:
        return volume_request(src, {}, ExportOptions(**options), None, InfectionPostprocessing())["outputs"]

    assert outputs(series)["dicom_sr"] is True and outputs(series, dicom_seg=True)["dicom_sr"] is True
    assert "dicom_sr" not in outputs(series, dicom_seg=False) and "dicom_sr" not in outputs(nifti)
