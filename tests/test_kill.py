"""``covseg infer`` killed, interrupted, starved of disk, or run twice at once into one folder (issue #16).

Runs are forked from this (already imported) test process and call ``main([...])``, so each costs a second,
not an interpreter start. A kill point is a patched function that sends SIGKILL to its own process at a
chosen call: nothing in the dying process can clean up, exactly as with ``kill -9``. Each kill is followed by
a normal rerun that must give complete results and leave no hidden folder.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from utils import use_tiny_default_model

from covseg.cli.main import main
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

OUTPUTS = ["infection_mask.nii.gz", "lung_mask.nii.gz", "report.json", "slices.csv"]
CTX = multiprocessing.get_context("fork")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_model(monkeypatch):
    return use_tiny_default_model(monkeypatch)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Three small CTs; two share the file name ct.nii.gz (siteA/, siteB/), like hospital exports."""
    root = tmp_path_factory.mktemp("kill_in")
    cts = []
    for i, rel in enumerate(("siteA/ct.nii.gz", "siteB/ct.nii.gz", "other/case.nii.gz")):
        phantom = make_chest_phantom(shape=(8, 48, 48), spacing=(7.5, 7.5, 15.0), seed=10 + i)
        cts.append(write_phantom(root / rel, phantom)["ct"])
    return cts


def _argv(cts: list[Path], out: Path) -> list[str]:
    return ["infer", *map(str, cts), "--out", str(out), "--no-progress", "--threads", "1", "--no-figures"]


def _in_child(target, *args) -> int:
    """Run ``target(*args)`` in a forked child; its exit code (``-9`` when it was killed)."""
    proc = CTX.Process(target=target, args=args)
    proc.start()
    proc.join(timeout=300)
    assert not proc.is_alive(), "child did not finish"
    return proc.exitcode


def _child_main(argv: list[str], log: str | None = None) -> None:
    torch.set_num_threads(1)  # as in DataLoader workers: no OpenMP pool inherited across fork
    if log:
        sys.stderr = open(log, "w")  # noqa: SIM115 - closed at exit
    os._exit(main(argv))


def _kill_at(module: object, attr: str, call: int) -> None:
    """Patch ``module.attr`` (in this forked child only) to SIGKILL the process at its ``call``-th call."""
    real = getattr(module, attr)
    count = {"n": 0}
    owner = os.getpid()

    def hook(*args, **kwargs):
        if os.getpid() != owner:  # a child this process forked (the CLI's first-volume prefetch): not counted
            return real(*args, **kwargs)
        count["n"] += 1
        if count["n"] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(module, attr, hook)


def _killed_run(argv: list[str], module_name: str, attr: str, call: int) -> None:
    import importlib

    _kill_at(importlib.import_module(module_name), attr, call)
    _child_main(argv)


def _assert_complete(out: Path, n: int) -> None:
    summary = json.loads((out / "summary.json").read_text())
    ok = [v for v in summary["volumes"] if v["status"] == "ok"]
    assert len(ok) == n and summary["n_volumes"] == n, summary["volumes"]
    for v in ok:
        _assert_volume_complete(out / v["name"])
    hidden = [p.name for p in out.rglob(".*") if p.name != ".covseg.lock"]
    assert hidden == [], hidden


def _assert_volume_complete(folder: Path) -> None:
    """Every output report.json lists is there, nothing else, and at least the masks, table and report."""
    listed = set(json.loads((folder / "report.json").read_text())["outputs"].values())
    assert set(os.listdir(folder)) == listed and set(OUTPUTS) <= listed, (folder, sorted(os.listdir(folder)))


KILL_POINTS = {
    # the CLI reads the 1st volume in a forked child (engines.inference.dataset.prefetch), which the hook leaves alone:
    # this process's 1st read is the 2nd volume
    "reading the 2nd volume": ("covseg.engines.inference.dataset", "read_volume", 1),
    "predicting the 2nd volume": ("covseg.engines.inference.predictor.SlicePredictor", "predict", 2),
    "writing a mask (half a folder)": ("covseg.engines.inference.outputs", "write_volume_like", 2),
    "writing summary.csv": ("covseg.reports.batch", "atomic_write_text", 2),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill9_then_rerun_gives_complete_results(tmp_path, inputs, tiny_model, point, capsys):
    module_name, attr, call = KILL_POINTS[point]
    out = tmp_path / "out"
    if "." in module_name and module_name.rsplit(".", 1)[1][0].isupper():  # a method: patch on its class
        mod, cls = module_name.rsplit(".", 1)
        code = _in_child(_killed_method_run, _argv(inputs, out), mod, cls, attr, call)
    else:
        code = _in_child(_killed_run, _argv(inputs, out), module_name, attr, call)
    assert code == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir() if p.name.startswith((".tmp-", ".old-")))
    capsys.readouterr()
    assert main(_argv(inputs, out)) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "left by a killed run" in line] == [
        f"warning: removed {out / name} (left by a killed run)" for name in left]
    _assert_complete(out, 3)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(names) == 3 and "ct" in names and "case" in names  # siteB's ct got a stable tag


def _killed_method_run(argv: list[str], module_name: str, cls: str, attr: str, call: int) -> None:
    import importlib

    _kill_at(getattr(importlib.import_module(module_name), cls), attr, call)
    _child_main(argv)


def _killed_between_renames(argv: list[str]) -> None:
    import types

    import covseg.engines.inference.export as export_mod

    proxy = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    _kill_at(proxy, "replace", 2)  # replace_dir: 1st call moves the old result aside, 2nd puts the new one
    export_mod.os = proxy
    _child_main(argv)


def test_kill9_between_the_two_renames_loses_nothing(tmp_path, inputs, tiny_model):
    """Killed after moving the previous result aside (.old-*), before putting the new one in place."""
    out = tmp_path / "out"
    assert main(_argv(inputs[:1], out)) == 0
    code = _in_child(_killed_between_renames, _argv(inputs[:1], out))
    assert code == -signal.SIGKILL
    assert not (out / "ct").exists() and [p for p in out.iterdir() if p.name.startswith(".old-")]
    assert main(_argv(inputs[:1], out)) == 0  # restores, then replaces
    _assert_complete(out, 1)


def _slow_predict_then_signal(argv: list[str], log: str, ready: str) -> None:
    from covseg.engines.inference.predictor import SlicePredictor

    real = SlicePredictor.predict
    count = {"n": 0}

    def slow(self, crops):
        count["n"] += 1
        if count["n"] == 2:  # the 2nd volume: say so and wait for the signal
            Path(ready).touch()
            time.sleep(60)
        return real(self, crops)

    SlicePredictor.predict = slow
    # as in a terminal: a shell that starts the test run as a background job (``pytest &``) ignores SIGINT in it,
    # and a Python started with SIGINT ignored keeps ignoring it; a Ctrl-C'd covseg has Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _child_main(argv, log)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_keep_finished_volumes_and_write_the_summary(tmp_path, inputs, tiny_model, sig):
    out, log, ready = tmp_path / "out", tmp_path / "stderr.txt", tmp_path / "ready"
    proc = CTX.Process(target=_slow_predict_then_signal,
                       args=(_argv([inputs[2], inputs[0]], out), str(log), str(ready)))
    proc.start()
    deadline = time.time() + 120
    while not ready.exists() and proc.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "child never reached the second volume"
    os.kill(proc.pid, sig)
    proc.join(timeout=120)
    assert proc.exitcode == 130
    err = log.read_text()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: interrupted: 1 volume(s) finished before it are complete in {out}/ (summary.json)"], err
    _assert_complete(out, 1)


def _run_main(argv: list[str]) -> None:
    _child_main(argv)


def test_two_concurrent_runs_into_one_folder_keep_all_volumes(tmp_path, inputs, tiny_model):
    out = tmp_path / "out"
    procs = [CTX.Process(target=_run_main, args=(_argv(cts, out),)) for cts in ([inputs[0], inputs[2]], [inputs[1]])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    _assert_complete(out, 3)
    keys = {v["source_key"] for v in json.loads((out / "summary.json").read_text())["volumes"]}
    assert keys == {str(p.resolve()) for p in inputs}


def test_same_named_inputs_in_separate_runs_do_not_replace_each_other(tmp_path, inputs, tiny_model):
    out = tmp_path / "out"
    assert main(_argv([inputs[0]], out)) == 0
    assert main(_argv([inputs[1]], out)) == 0  # siteB/ct.nii.gz after siteA/ct.nii.gz
    assert main(_argv([inputs[0]], out)) == 0  # siteA again: back into its own folder
    _assert_complete(out, 2)
    sources = {v["name"]: v["source"] for v in json.loads((out / "summary.json").read_text())["volumes"]}
    assert sources["ct"] == str(inputs[0]) and len(sources) == 2


def test_output_folder_inside_input_folder(tmp_path, inputs, tiny_model):
    folder = inputs[2].parent
    out = folder / "results"
    try:
        assert main(["infer", str(folder), "--out", str(out), "--no-progress"]) in (0, 1)
        first = json.loads((out / "summary.json").read_text())["n_volumes"]
        assert main(["infer", str(folder), "--out", str(out), "--no-progress"]) in (0, 1)
        assert json.loads((out / "summary.json").read_text())["n_volumes"] == first  # its own masks not read
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- disk full
def test_disk_full_fake_is_one_line_and_keeps_finished(tmp_path, inputs, tiny_model, monkeypatch, capsys):
    """Fake ENOSPC (monkeypatch): the 2nd volume's mask write and the summary write fail."""
    import covseg.engines.inference.outputs as outputs_mod
    import covseg.reports.batch as batch_mod

    real_write, calls = outputs_mod.write_volume_like, {"n": 0}

    def full_after_first_volume(array, vol, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(array, vol, path, *a, **k)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs_mod, "write_volume_like", full_after_first_volume)
    monkeypatch.setattr(batch_mod, "atomic_write_text", full)
    out = tmp_path / "out"
    assert main(_argv([inputs[2], inputs[0]], out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {inputs[0]}: OSError: [Errno 28] No space left on device",
                      f"error: {out}: summary cannot be written (No space left on device)"], err
    _assert_volume_complete(out / "case")
    assert [p.name for p in out.rglob(".*")] == [".covseg.lock"]


def test_disk_full_real_tmpfs(tmp_path, inputs, tiny_model, capsys):
    """A real tmpfs filled up after the first volume (root with mount rights only; skipped elsewhere)."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(tiny)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the fake ENOSPC test covers it")
    try:
        out = tiny / "out"
        assert main(_argv([inputs[2]], out)) == 0
        filler = tiny / "filler"
        with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError):  # fill the disk to the last block
            while True:
                fh.write(b"\0" * 4096)
        code = main(_argv([inputs[0]], out))
        err = capsys.readouterr().err
        assert code in (1, 2) and "Traceback" not in err and ".tmp-" not in err  # names the real file
        assert all(line.startswith(("error:", "warning:")) for line in err.splitlines() if line.strip()), err
        _assert_volume_complete(out / "case")  # the finished volume is kept
        assert [p.name for p in out.rglob(".*")] == [".covseg.lock"]  # no half-written folder
        filler.unlink()
        assert main(_argv([inputs[0]], out)) == 0  # space again: the rerun completes
        _assert_complete(out, 2)
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


def test_tagged_name_still_finds_its_label(tmp_path, inputs, tiny_model):
    """``siteB/ct.nii.gz`` written as ``ct_<tag>`` is still scored against ``labels/ct.nii.gz``."""
    import shutil

    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(inputs[0].parent / "ct_infection.nii.gz", labels / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(_argv(inputs[:2], out) + ["--labels", str(labels)]) == 0
    volumes = json.loads((out / "summary.json").read_text())["volumes"]
    assert len(volumes) == 2 and volumes[1]["name"].startswith("ct_")
    assert all(v["label"] == str(labels / "ct.nii.gz") and v["metrics"] for v in volumes)
