"""Fault injection (issue #16): each numbered fault of the issue, and the mechanisms that fix them.

Every test here fails on the code before the fix (the fault number is in the test name). Real CT comes
from ../shared/data/ct-volumes (skipped when absent); the rest uses small phantoms.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from covseg.io import CovsegInputError, atomic_write_text, find_volumes, read_volume, write_volume_like
from covseg.io.atomic import clean_leftovers, ensure_writable_dir, leftover_name
from covseg.io.naming import claim_names, name_tag, source_key
from covseg.io.outlock import LOCK_NAME, output_lock
from covseg.reports.batch import VolumeResult, read_summary, recorded_sources, write_batch_report
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_phantom_dicom
from covseg.synthetic.phantom_nifti import write_phantom
from covseg.transforms.lung import lung_mask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(shape=(12, 64, 64), spacing=(5.6, 5.6, 10.0), seed=3)


def _flip_middle(data: bytes, n: int = 5) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid:mid + n] = bytes(x ^ 0xFF for x in b[mid:mid + n])
    return bytes(b)


# ------------------------------------------------------------------------------------ fault 1: gzip CRC
def test_fault1_bitflipped_nii_gz_is_refused(ct_volumes_dir, tmp_path):
    """The issue's command: 5 flipped bytes in the middle of chest-cip64/ct.nii.gz. ITK read it silently."""
    bad = tmp_path / "bitflip.nii.gz"
    bad.write_bytes(_flip_middle((ct_volumes_dir / "chest-cip64" / "ct.nii.gz").read_bytes()))
    with pytest.raises(CovsegInputError) as err:
        read_volume(bad)
    assert str(err.value).startswith(f"{bad}: corrupt gzip data"), err.value


def test_fault1_clean_nii_gz_reads_as_before(ct_volumes_dir):
    """The verified path (nibabel on the checked bytes) gives ITK's voxels and geometry."""
    import SimpleITK as sitk

    path = ct_volumes_dir / "chest-cip64" / "ct.nii.gz"
    vol = read_volume(path)
    ref = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).astype(np.float32))
    assert vol.spacing == ref.GetSpacing() and vol.origin == ref.GetOrigin()


def test_fault1_crc_only_damage_is_refused(tmp_path, phantom):
    """A stream that inflates fine but whose CRC-32 disagrees (damage ITK can never see) is refused."""
    good = write_phantom(tmp_path / "good.nii.gz", phantom)["ct"]
    data = bytearray(good.read_bytes())
    data[-8] ^= 0x01  # the CRC-32 field of the gzip trailer
    bad = tmp_path / "crc.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CovsegInputError, match=r"corrupt gzip data \(CRC check failed"):
        read_volume(bad)


# ------------------------------------------------------------------------- fault 6: no lung, no report
def test_fault6_abdomen_slices_without_lung_report_none(ct_volumes_dir):
    vol = read_volume(ct_volumes_dir / "abdomen-totalseg" / "example_ct_sm.nii.gz")
    lower = vol.array[:16]  # LPS: slice 0 is the most inferior
    assert not lung_mask(lower, vol.spacing).any()  # before: 2 mL of "lung" in 13 of 16 slices


def test_fault6_real_lungs_are_still_found(ct_volumes_dir):
    vol = read_volume(ct_volumes_dir / "abdomen-totalseg" / "example_ct_sm.nii.gz")
    mask = lung_mask(vol.array, vol.spacing)
    area_cm2 = (mask > 0).reshape(mask.shape[0], -1).sum(axis=1) * vol.spacing[0] * vol.spacing[1] / 100.0
    assert area_cm2.max() > 50.0  # the lung bases at the top of the scan


# ---------------------------------------------------------------------- fault 7: init_weights under DDP
def test_fault7_multi_gpu_config_honours_init_weights(tmp_path):
    """Resolve multi_gpu_train.yaml's ``network`` (DDP, gloo, one process): it must hold --init_weights."""
    import torch.distributed as dist
    from monai.bundle import ConfigParser

    torch.manual_seed(1)
    saved = torch.nn.Conv2d(1, 1, 3).state_dict()
    weights = tmp_path / "w.pt"
    torch.save(saved, weights)
    parser = ConfigParser()
    configs = REPO / "bundles" / "infnet" / "configs"
    parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    parser["network_def"] = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3}
    parser["init_weights"] = str(weights)
    parser["device"] = "$torch.device('cpu')"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        network = parser.get_parsed_content("network")
        assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
        for key, value in saved.items():
            assert torch.equal(network.module.state_dict()[key], value), key
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------- fault 8: messages
def test_fault8_corrupt_dicom_slice_message_has_no_simpleitk_internals(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "s", phantom)
    files[4].write_bytes(files[4].read_bytes()[:-3000])
    with pytest.raises(CovsegInputError) as err:
        read_volume(tmp_path / "s")
    msg = str(err.value)
    assert msg.startswith(f"{files[4]}: DICOM slice cannot be read"), msg
    for internal in (".cxx", "sitk::", "/work/src", "Exception thrown", "0x"):
        assert internal not in msg, msg


def test_fault8_fifo_is_not_called_empty(tmp_path):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    (src,) = find_volumes([fifo])  # must not open it: that would block until a writer comes
    with pytest.raises(CovsegInputError) as err:
        read_volume(src)
    assert str(err.value) == f"{fifo}: is not a regular file (a FIFO / named pipe); give the image file itself"


def test_fault8_output_folder_inside_input_folder_is_skipped(tmp_path, phantom):
    write_phantom(tmp_path / "in" / "ct.nii.gz", phantom)
    inputs = [s.name for s in find_volumes([tmp_path / "in"])]
    out = tmp_path / "in" / "results"
    (out / "ct").mkdir(parents=True)
    (out / LOCK_NAME).touch()
    vol = read_volume(tmp_path / "in" / "ct.nii.gz")
    write_volume_like(vol.array > -500, vol, out / "ct" / "infection_mask.nii.gz")
    (out / "ct" / "report.json").write_text("{}")
    shutil.copytree(out / "ct", tmp_path / "in" / "old_result")  # a result folder without the lock file
    assert [s.name for s in find_volumes([tmp_path / "in"])] == inputs


# ---------------------------------------------------------------------- fault 2: read-only output folder
def _as_unprivileged_root(code: str) -> subprocess.CompletedProcess:
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
           "--inh-caps=-dac_override,-dac_read_search", sys.executable, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ})


def test_fault2_read_only_existing_out_refused_up_front(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    code = ("from covseg.io.atomic import ensure_writable_dir\n"
            f"ensure_writable_dir({str(out)!r})\n")
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be tested honestly")
        proc = _as_unprivileged_root(code)
        if "Operation not permitted" in proc.stderr and "setpriv" in proc.stderr:
            pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    else:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"{out}: output folder is not writable (Permission denied)" in proc.stderr


def _without_read_permission_bypass(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python that file permissions apply to (root drops CAP_DAC_*), or skip the test."""
    if os.geteuid() != 0:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: an unreadable file cannot be tested honestly")
    proc = _as_unprivileged_root(code)
    if "Operation not permitted" in proc.stderr and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    return proc


def test_unreadable_subfolder_of_an_input_is_one_error_and_the_rest_is_found(tmp_path):
    """A subfolder without read permission (a lost+found, another user's folder): discovery raised a raw
    PermissionError while looking for covseg's lock file in it, and covseg infer stopped the whole batch."""
    scans = tmp_path / "scans"
    files = write_phantom(scans / "a.nii.gz", make_chest_phantom(shape=(4, 32, 32), spacing=(10.0, 10.0, 10.0)))
    for key, path in files.items():
        if key != "ct":
            path.unlink()  # the label maps: not inputs here
    locked = scans / "locked"
    locked.mkdir()
    locked.chmod(0o000)
    secret = scans / "secret.nii.gz"
    secret.write_bytes(files["ct"].read_bytes())
    secret.chmod(0o000)
    code = ("from covseg.io import CovsegInputError, find_volumes, read_volume\n"
            f"for s in find_volumes([{str(scans)!r}]):\n"
            "    try:\n"
            "        s.error or read_volume(s)\n"
            "    except CovsegInputError as exc:\n"
            "        s.error = exc.reason\n"
            "    print(s.name, '|', s.path, '|', s.error)\n")
    try:
        proc = _without_read_permission_bypass(code)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows if r[2] == "None"] == ["a"]  # the readable volume is found
    assert sorted(r[1:] for r in rows if r[2] != "None") == [
        [str(locked), "folder cannot be read (Permission denied)"],
        [str(secret), "cannot be read (Permission denied)"]]  # not "corrupt gzip data ([Errno 13] …)"


def test_unreadable_slice_of_a_dicom_series_is_not_dropped_silently(tmp_path):
    """A slice without read permission was taken for a non-DICOM file and left out: the series read one slice
    short, without a word."""
    files = write_phantom_dicom(tmp_path / "series", make_chest_phantom(shape=(6, 32, 32), spacing=(10.0, 10.0, 10.0)))
    hidden = files[-1]  # an end slice: a middle one leaves a gap, which is refused
    hidden.chmod(0o000)
    code = ("from covseg.io import CovsegInputError, find_volumes, read_volume\n"
            f"for s in find_volumes([{str(tmp_path / 'series')!r}]):\n"
            "    try:\n"
            "        warnings = [] if s.error else read_volume(s).warnings\n"
            "    except CovsegInputError as exc:\n"
            "        s.error, warnings = exc.reason, []\n"
            "    print(s.path, '|', len(s.files), '|', s.error, '|', warnings)\n")
    try:
        proc = _without_read_permission_bypass(code)
    finally:
        hidden.chmod(0o644)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = sorted(line.split(" | ") for line in proc.stdout.splitlines())
    assert [r[0] for r in rows] == [str(tmp_path / "series"), str(hidden)], rows
    assert rows[1][2] == "cannot be read (Permission denied)"
    assert rows[0][1] == str(len(files) - 1) and f"could not be read (e.g. {hidden.name})" in rows[0][3]


# --------------------------------------------------------------------------------- fault 3: disk full
def test_fault3_full_disk_text_write_is_one_line(tmp_path, monkeypatch):
    """Fake: ``Path.write_text`` raises ENOSPC (no tmpfs needed); the temporary file is removed."""
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(CovsegInputError) as err:
        atomic_write_text(tmp_path / "summary.json", "{}")
    assert str(err.value) == f"{tmp_path / 'summary.json'}: cannot be written (No space left on device)"
    assert os.listdir(tmp_path) == []


def test_fault3_truncated_nifti_write_is_caught(tmp_path, phantom, monkeypatch):
    """SimpleITK leaves a truncated .nii.gz on a full disk and raises nothing; the length check catches it."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def truncating(img, path, *args):
        real(img, path, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(sitk, "WriteImage", truncating)
    vol = phantom.as_volume()
    with pytest.raises(CovsegInputError, match="cannot be written .*incomplete"):
        write_volume_like(vol.array > 0, vol, tmp_path / "mask.nii.gz")
    assert os.listdir(tmp_path) == []


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_fault3_real_full_tmpfs(tmp_path, phantom):
    """A real 64 KiB tmpfs (root only; skipped where mount is not allowed): the mask write fails in one line."""
    tiny = tmp_path / "tiny"
    if not _tmpfs(tiny, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the ENOSPC fakes above cover it")
    try:
        big = make_chest_phantom(shape=(40, 128, 128), spacing=(2.8, 2.8, 7.5), seed=1).as_volume()
        noise = np.random.default_rng(0).integers(0, 2, big.array.shape).astype(np.uint8)  # incompressible-ish
        with pytest.raises(CovsegInputError) as err:
            write_volume_like(noise, big, tiny / "out" / "mask.nii.gz")
        assert "cannot be written" in str(err.value) and "\n" not in str(err.value)
        assert not [p for p in (tiny / "out").iterdir()]  # no half-written file, no temporary
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


# ------------------------------------------------------------------ faults 4, 5: shared output folders
def _result(name: str, out: Path, key: str | None = None, ok: bool = True) -> VolumeResult:
    if not ok:
        return VolumeResult(name, f"{name}.nii.gz", status="error", error=f"{name}.nii.gz: bad", key=key)
    (out / name).mkdir(parents=True, exist_ok=True)
    report = {"name": name, "source": f"{name}.nii.gz", "status": "ok", "lung_ml": 1.0}
    (out / name / "report.json").write_text(json.dumps(report))

    class _Report:
        def to_dict(self):
            return dict(report)

    return VolumeResult(name, f"{name}.nii.gz", report=_Report(), out_dir=str(out / name), key=key)


def test_fault4_summaries_merge_across_runs(tmp_path):
    write_batch_report([_result("a", tmp_path), _result("b", tmp_path)], tmp_path, {"command": "run 1"})
    write_batch_report([_result("c", tmp_path), _result("a", tmp_path, ok=False)], tmp_path, {"command": "run 2"})
    summary = read_summary(tmp_path)
    assert [v["name"] for v in summary["volumes"]] == ["a", "b", "c"]
    a = summary["volumes"][0]
    assert a["status"] == "ok" and a["last_error"] == "a.nii.gz: bad"  # the finished result was kept
    assert (summary["n_volumes"], summary["n_ok"]) == (3, 3)
    assert [r["command"] for r in summary["runs"]] == ["run 1", "run 2"]
    csv_rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(csv_rows) == 4


def test_fault4_summary_adds_folders_of_a_run_killed_before_its_summary(tmp_path):
    _result("orphan", tmp_path)  # folder written, summary never was
    write_batch_report([_result("x", tmp_path)], tmp_path, {})
    assert {v["name"] for v in read_summary(tmp_path)["volumes"]} == {"orphan", "x"}


def _merge_one(out: Path, name: str) -> None:
    result = _result(name, out)
    for _ in range(5):
        write_batch_report([result], out, {})


def test_fault4_concurrent_summary_writers_keep_every_volume(tmp_path):
    """Six processes (forked: no re-import) merge one volume each into one folder at once: all six stay."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_merge_one, args=(tmp_path, f"v{i}")) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 6
    assert sorted(v["name"] for v in read_summary(tmp_path)["volumes"]) == [f"v{i}" for i in range(6)]


def test_fault4_same_named_inputs_get_stable_distinct_names(tmp_path, phantom):
    for site in ("siteA", "siteB"):
        write_phantom(tmp_path / site / "ct.nii.gz", phantom)
    a, b = tmp_path / "siteA" / "ct.nii.gz", tmp_path / "siteB" / "ct.nii.gz"
    out = tmp_path / "out"
    out.mkdir()
    tag_b = name_tag(str(b.resolve()))
    # one run with both
    both = find_volumes([a, b])
    claim_names(both, out, {})
    assert [s.name for s in both] == ["ct", f"ct_{tag_b}"]
    # run 1: siteA alone writes <out>/ct; run 2: siteB alone must not replace it
    (src_a,) = find_volumes([a])
    claim_names([src_a], out, {})
    assert src_a.name == "ct"
    (out / "ct").mkdir()
    (out / "ct" / "report.json").write_text(json.dumps({"source": str(a)}))
    (src_b,) = find_volumes([b])
    claim_names([src_b], out, {})
    assert src_b.name == f"ct_{tag_b}"
    # siteA comes back to its own folder, also when recorded only in the summary
    (src_a,) = find_volumes([a])
    claim_names([src_a], out, {"ct": source_key(src_a)})
    assert src_a.name == "ct"
    write_batch_report([VolumeResult("ct", str(a), status="error", error="x", key=source_key(src_a))], out, {})
    assert recorded_sources(out) == {"ct": str(a.resolve())}


def test_fault4_unknown_folder_is_never_claimed(tmp_path, phantom):
    write_phantom(tmp_path / "in" / "ct.nii.gz", phantom)
    out = tmp_path / "out"
    (out / "ct").mkdir(parents=True)  # someone else's folder, no report
    (src,) = find_volumes([tmp_path / "in" / "ct.nii.gz"])
    claim_names([src], out, {})
    assert src.name.startswith("ct_") and len(src.name) == 11


def test_fault5_leftovers_of_dead_runs_are_cleaned_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = os.getpid()
    (tmp_path / f".tmp-{dead}-0123abcd-ct").mkdir()  # half-written folder of a killed run
    (tmp_path / f".tmp-{dead}-0123abcd-ct" / "lung_mask.nii.gz").write_bytes(b"x")
    (tmp_path / f".tmp-{dead}-4567abcd-summary.json").write_text("{")
    (tmp_path / f".old-{dead}-89abcdef-prev").mkdir()  # killed between the two renames: prev is missing
    (tmp_path / f".old-{dead}-89abcdef-prev" / "report.json").write_text("{}")
    (tmp_path / f".tmp-{live}-0123abcd-busy").mkdir()  # a live run's work in progress
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / f".tmp-{dead}-0123abcd-report.json").write_text("{")
    ours = leftover_name("tmp", "mine")  # this live process, with its host tag
    (tmp_path / ours).mkdir()
    foreign_new = f".tmp-{dead}@ffffff-0123abcd-other"  # another host's pid cannot be checked: kept while young
    foreign_old = f".tmp-{dead}@ffffff-4567abcd-stale"  # ... and removed when over an hour old
    (tmp_path / foreign_new).mkdir()
    (tmp_path / foreign_old).mkdir()
    os.utime(tmp_path / foreign_old, (time.time() - 7200, time.time() - 7200))
    actions = clean_leftovers(tmp_path)
    assert len(actions) == 5
    assert sorted(os.listdir(tmp_path)) == sorted([f".tmp-{live}-0123abcd-busy", ours, foreign_new, "prev", "vol"])
    assert (tmp_path / "prev" / "report.json").exists() and os.listdir(tmp_path / "vol") == []


def test_leftover_names_carry_the_pid(tmp_path):
    assert leftover_name("tmp", "ct").startswith(f".tmp-{os.getpid()}@")
    ensure_writable_dir(tmp_path / "new")
    assert os.listdir(tmp_path / "new") == []  # the write probe leaves nothing


def _take_lock(folder: Path, queue) -> None:
    with output_lock(folder, on_wait=lambda message: queue.put("waited")):
        queue.put("locked")


def test_output_lock_is_reentrant_and_excludes_other_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with output_lock(tmp_path), output_lock(tmp_path):  # re-entrant in one process
        proc = ctx.Process(target=_take_lock, args=(tmp_path, queue))
        proc.start()
        assert queue.get(timeout=60) == "waited"
        proc.join(timeout=1)
        assert proc.is_alive() and queue.empty()  # still waiting while this process holds the lock
    assert queue.get(timeout=60) == "locked"
    proc.join(timeout=60)
    assert proc.exitcode == 0
