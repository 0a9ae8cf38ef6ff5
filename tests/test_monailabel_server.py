"""covseg's MONAI Label app against the REAL server (``covseg label-server``) on 127.0.0.1.

One server for the module, started on a studies folder holding a real CT volume (chest-cip64, when ../shared/data is
there: only the comparison with ``covseg infer`` needs it) and a phantom with a flat, sharp-edged ground-glass disc
that the shipped model misses. In file order: /info/ lists covseg's models and
labels; the infection and lung infers equal ``covseg infer`` voxel for voxel in the input's geometry (fp32 on both
sides, one thread); an annotator's label of the phantom (PUT /datastore/label) and a 1-epoch training (POST /train)
publish new weights that the next infer uses, and the phantom's Dice improves; finally SIGTERM stops the server and
a running training subprocess (by process group). Skips only when MONAI Label is not installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from utils import require

require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
requests = require("requests", reason="requests comes with the label-server install")

from conftest import SHARED_DATA  # noqa: E402

from covseg.networks.loading import DEFAULT_BUNDLE  # noqa: E402
from covseg.synthetic.phantom import make_chest_phantom  # noqa: E402

pytestmark = pytest.mark.slow

INFECTION, LUNGS, MULTICLASS = "covseg_infection", "covseg_lungs", "covseg_ggo_consolidation"
START_TIMEOUT_S, TRAIN_TIMEOUT_S = 180, 900


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) is not alive
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def write_missed_lesion_phantom(folder: Path) -> tuple[Path, Path]:
    """A small chest phantom (healthy) with a flat -450 HU disc in the right lung on 5 slices, and its label."""
    ph = make_chest_phantom(shape=(8, 128, 128), spacing=(2.8, 2.8, 5.0), seed=3, lesions=False)
    yy, xx = np.mgrid[0:128, 0:128]
    ys, xs = np.nonzero(ph.lung_labels[4] == 1)
    cy, cx = int(ys.mean()), int(xs.mean())
    hu, truth = ph.hu.copy(), np.zeros_like(ph.lung_labels)
    for z in range(2, 7):
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 12 ** 2) & (ph.lung_labels[z] == 1)
        hu[z][disc] = -450
        truth[z][disc] = 1
    ct, label = folder / "phantom.nii.gz", folder.parent / "phantom_label.nii.gz"
    sitk.WriteImage(ph.image(hu), str(ct), True)
    sitk.WriteImage(ph.image(truth), str(label), True)
    return ct, label


class Server:
    """A running ``covseg label-server`` (its own session, so the test can always kill what is left)."""

    def __init__(self, studies: Path, app_dir: Path, log: Path) -> None:
        self.log = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                           os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "covseg", "label-server", "--studies", str(studies), "--app-dir", str(app_dir),
             "--threads", "1", "--verbose", "WARNING"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url, self.server_pgid = self._wait_for_banner()
        self._wait_for_info()

    def _wait_for_banner(self) -> tuple[str, int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"(http://127\.0\.0\.1:\d+)/ \(pid \d+, process group (\d+)\)", self.log.read_text())
            if match:
                return match.group(1), int(match.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"label-server did not start:\n{self.log.read_text()[-3000:]}")

    def _wait_for_info(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-server exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/info/", timeout=10).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"/info/ did not answer in {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def infer(self, model: str, image: str, out: Path, **params) -> dict:
        """POST /infer/<model>?image=<id> (the default multipart answer): the label volume into ``out``; returns
        the result JSON."""
        from requests_toolbelt.multipart.decoder import MultipartDecoder

        res = requests.post(f"{self.url}/infer/{model}", params={"image": image},
                            data={"params": json.dumps(params)}, timeout=900)
        assert res.status_code == 200, res.text[:500]
        parts = {}
        for part in MultipartDecoder.from_response(res).parts:
            name = "params" if 'name="params"' in part.headers[b"Content-Disposition"].decode() else "image"
            parts[name] = part.content
        assert set(parts) == {"params", "image"}, f"answer parts: {sorted(parts)}"
        out.write_bytes(parts["image"])
        return json.loads(parts["params"])

    def train_status(self) -> dict:
        return requests.get(f"{self.url}/train/", params={"check_if_running": "false"}, timeout=30).json()

    def train(self, **params) -> dict:
        """POST /train/covseg_infection with ``params``; waits for the training to end, returns its status."""
        res = requests.post(f"{self.url}/train/{INFECTION}", json=params, timeout=60)
        assert res.status_code == 200, res.text[:500]
        task_id = res.json()["id"]
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while True:
            status = self.train_status()
            if status.get("id") == task_id and status.get("status") not in ("SUBMITTED", "RUNNING"):
                return status
            assert time.monotonic() < deadline, "training did not finish"
            time.sleep(2)

    def train_subprocesses(self) -> list[int]:
        """PIDs of MONAI Label's train subprocesses in the server's process group."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                cmd = stat.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                pid = int(stat.parent.name)
                if "monailabel.interfaces.utils.app" in cmd and "-m train" in cmd and os.getpgid(pid) == \
                        self.server_pgid:
                    pids.append(pid)
        return pids

    def stop(self) -> None:
        """SIGTERM label-server (it stops the server's group); kill whatever is left by process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        for pgid in (self.server_pgid, self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Studies: the phantom, and a copy of the real chest-cip64 when ../shared/data is there."""
    root = tmp_path_factory.mktemp("label-server")
    studies = root / "studies"
    studies.mkdir()
    real = SHARED_DATA / "ct-volumes" / "chest-cip64" / "ct.nii.gz"
    if real.is_file():
        shutil.copy(real, studies / "chest-cip64.nii.gz")
    write_missed_lesion_phantom(studies)
    return root


def _require_real_ct(workspace: Path) -> Path:
    path = workspace / "studies" / "chest-cip64.nii.gz"
    if not path.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA / 'ct-volumes'} (set COVSEG_SHARED_DATA to the shared/data "
                    "folder)")
    return path


@pytest.fixture(scope="module")
def server(workspace):
    srv = Server(workspace / "studies", workspace / "app", workspace / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cli_outputs(workspace):
    """``covseg infer`` of chest-cip64 in fp32 on one thread, started early: it runs beside the server's infer."""
    out = workspace / "cli"
    proc = subprocess.Popen([sys.executable, "-m", "covseg", "infer", str(_require_real_ct(workspace)),
                             "--out", str(out), "--no-bf16", "--threads", "1", "--no-progress", "--no-figures"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    yield proc, out / "chest-cip64"
    if proc.poll() is None:
        proc.kill()


def _cli_done(cli_outputs) -> Path:
    proc, folder = cli_outputs
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-2000:]
    return folder


def test_info_lists_covseg_models_and_labels(server, workspace):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert info["name"] == "covseg"
    assert {INFECTION, LUNGS} <= set(info["models"])
    assert info["models"][INFECTION]["labels"] == {"infection": 1}
    assert info["models"][LUNGS]["labels"] == {"right lung": 1, "left lung": 2}
    assert {"infection", "right lung", "left lung"} <= set(info["labels"])
    assert INFECTION in info["trainers"]
    multiclass = (DEFAULT_BUNDLE.parent / "multiclass_infnet" / "models" / "model.pt").is_file()
    assert (MULTICLASS in info["models"]) == multiclass
    assert info["models"]["covseg_jcs_diagnosis"]["labels"] == {"infection": 1}  # the shipped classifier bundle
    ids = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()
    expected = {"phantom"} | ({"chest-cip64"} if (workspace / "studies" / "chest-cip64.nii.gz").is_file() else set())
    assert set(ids["objects"]) == expected


def test_bad_requests_are_one_line_http_errors_and_the_server_keeps_serving(server, workspace):
    data = (workspace / "studies" / "phantom.nii.gz").read_bytes()
    damaged = workspace / "damaged.nii.gz"  # outside the studies: a path on the server is taken as the image
    damaged.write_bytes(data[: len(data) // 2])
    wrong = workspace / "wrong_size_label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 20, 20), np.uint8)), str(wrong), True)
    infer = f"{server.url}/infer/{LUNGS}"
    for url, image, status, reason in ((infer, str(damaged), 422, f"{damaged}: truncated file"),
                                       (infer, "nosuch", 404, "image 'nosuch' not found"),
                                       (f"{server.url}/infer/nosuch", "phantom", 404, "unknown model 'nosuch'")):
        res = requests.post(url, params={"image": image, "output": "json"}, timeout=120)
        assert res.status_code == status and reason in res.json()["detail"], res.text[:300]
    res = requests.post(infer, params={"image": "phantom", "output": "json"}, data={"params": "{slice: 0.5"},
                        timeout=60)  # MONAI Label parses the field itself: a bare 500 before
    assert res.status_code == 400 and res.json()["detail"].startswith(
        f"POST /infer/{LUNGS}: a form field (params / info) is not valid JSON: "), res.text[:300]
    with wrong.open("rb") as fh:
        res = requests.put(f"{server.url}/datastore/label", params={"image": "phantom", "tag": "final"},
                           files={"label": ("label.nii.gz", fh)}, timeout=60)
    assert res.status_code == 422 and "label size (20, 20, 3) differs" in res.json()["detail"], res.text[:300]
    objects = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert "final" not in objects["phantom"]["labels"]  # nothing stored
    res = requests.post(infer, params={"image": "phantom", "output": "json"}, timeout=300)
    assert res.status_code == 200 and res.json()["voxels"]["right lung"] > 0  # still serving
    log = server.log.read_text()
    assert f"infer {LUNGS}: {damaged}: truncated file" in log and "Traceback" not in log


def test_infer_equals_covseg_infer_in_input_geometry(server, cli_outputs, workspace):
    import nibabel as nib

    result = server.infer(INFECTION, "chest-cip64", workspace / "server_infection.nii.gz", bf16=False)
    assert result["precision"] == "fp32" and result["fine_tuned"] is False
    assert result["model_file"] == str(DEFAULT_BUNDLE / "models" / "model.pt")
    lungs = server.infer(LUNGS, "chest-cip64", workspace / "server_lungs.nii.gz")
    cli = _cli_done(cli_outputs)
    ran = json.loads((cli / "report.json").read_text())["model"]
    assert result["backend"] == ran["backend"] and result["precision"] == ran["precision"]  # both `auto` at fp32
    ct = nib.load(workspace / "studies" / "chest-cip64.nii.gz")
    for served, written, counts in ((workspace / "server_infection.nii.gz", cli / "infection_mask.nii.gz", result),
                                    (workspace / "server_lungs.nii.gz", cli / "lung_mask.nii.gz", lungs)):
        a, b = nib.load(served), nib.load(written)
        assert a.shape == ct.shape and np.allclose(a.affine, ct.affine, atol=1e-5), served.name
        got, want = np.asarray(a.dataobj), np.asarray(b.dataobj)
        assert np.array_equal(got, want), f"{served.name}: {int((got != want).sum())} voxels differ"
        assert sum(counts["voxels"].values()) == int((got > 0).sum())
    assert result["voxels"]["infection"] > 0 and lungs["voxels"]["right lung"] > 0


def test_ggo_consolidation_equals_covseg_infer_with_the_multiclass_bundle(server, workspace):
    import nibabel as nib

    bundle = DEFAULT_BUNDLE.parent / "multiclass_infnet"
    if not (bundle / "models" / "model.pt").is_file():
        pytest.skip(f"{bundle} has no weights: the GGO / consolidation model is not offered")
    phantom = workspace / "studies" / "phantom.nii.gz"
    out = workspace / "cli_multiclass"
    cli = subprocess.run([sys.executable, "-m", "covseg", "infer", str(phantom), "--out", str(out), "--bundle",
                          str(bundle), "--no-bf16", "--threads", "1", "--no-progress", "--no-figures"],
                         capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    assert cli.returncode == 0, cli.stderr[-2000:]
    result = server.infer(MULTICLASS, "phantom", workspace / "server_classes.nii.gz", bf16=False)
    assert result["model_file"] == str(bundle / "models" / "model.pt")
    served = nib.load(workspace / "server_classes.nii.gz")
    written = nib.load(out / "phantom" / "infection_labels.nii.gz")
    assert served.shape == nib.load(phantom).shape and np.allclose(served.affine, nib.load(phantom).affine, atol=1e-5)
    got, want = np.asarray(served.dataobj), np.asarray(written.dataobj)
    assert set(np.unique(got).tolist()) <= {0, 1, 2}
    assert np.array_equal(got, want), f"{int((got != want).sum())} voxels differ"


def test_label_then_train_publishes_weights_the_next_infer_uses(server, workspace):
    shipped = DEFAULT_BUNDLE / "models" / "model.pt"
    shipped_sha = _sha(shipped)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(workspace / "phantom_label.nii.gz")))
    server.infer(INFECTION, "phantom", workspace / "before.nii.gz", bf16=False)
    before = _dice(sitk.GetArrayFromImage(sitk.ReadImage(str(workspace / "before.nii.gz"))), truth)
    assert before < 0.2, f"the shipped model already finds the phantom's lesion (Dice {before:.3f})"

    with (workspace / "phantom_label.nii.gz").open("rb") as fh:
        res = requests.put(f"{server.url}/datastore/label", params={"image": "phantom", "tag": "final"},
                           files={"label": ("phantom.nii.gz", fh)}, timeout=60)
    assert res.status_code == 200, res.text[:500]
    published = workspace / "app" / "model" / INFECTION / "model.pt"
    dices = [before]
    for epochs in (1, 2):  # 1 epoch, then 2 more continuing from the published weights
        status = server.train(max_epochs=epochs)
        assert status["status"] == "DONE", "\n".join(status.get("details", []))
        assert published.is_file()
        assert _sha(shipped) == shipped_sha, "the shipped bundle's weights were changed"
        stats = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"][INFECTION]
        assert stats["total_epochs"] == epochs and stats["epoch"] == epochs

        after_file = workspace / f"after_{len(dices)}.nii.gz"
        result = server.infer(INFECTION, "phantom", after_file, bf16=False)
        assert result["model_file"] == str(published) and result["fine_tuned"] is True
        assert result["weights_sha256"] == _sha(published)
        after_img = sitk.ReadImage(str(after_file))
        ct_img = sitk.ReadImage(str(workspace / "studies" / "phantom.nii.gz"))
        assert after_img.GetSize() == ct_img.GetSize() and after_img.GetSpacing() == ct_img.GetSpacing()
        assert after_img.GetOrigin() == ct_img.GetOrigin() and after_img.GetDirection() == ct_img.GetDirection()
        dices.append(_dice(sitk.GetArrayFromImage(after_img), truth))
    print("phantom lesion Dice: shipped model {:.3f}, after 1 epoch {:.3f}, after 1 + 2 epochs {:.3f}".format(*dices))
    assert dices[1] > before, f"1 epoch on the label did not improve the lesion's Dice: {dices}"
    assert dices[2] >= 0.6 and dices[2] > before + 0.4, f"Dice before / after: {dices}"


def test_sigterm_stops_server_and_running_training(server):
    res = requests.post(f"{server.url}/train/{INFECTION}", json={"max_epochs": 50}, timeout=60)
    assert res.status_code == 200, res.text[:500]
    deadline = time.monotonic() + 120
    while not (trainers := server.train_subprocesses()):
        assert time.monotonic() < deadline, "no train subprocess appeared"
        time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    deadline = time.monotonic() + 15
    while any(_pid_alive(p) for p in trainers) or _group_alive(server.server_pgid):
        assert time.monotonic() < deadline, "the server or its training survived SIGTERM"
        time.sleep(0.2)


def test_a_port_that_cannot_be_used_is_one_usage_line_before_the_server_starts(tmp_path, capsys):
    """``--port 99999`` started MONAI Label and ended in uvicorn's OverflowError traceback; a port in use too."""
    import socket

    from covseg.cli.main import main

    studies = tmp_path / "studies"
    studies.mkdir()
    assert main(["label-server", "--studies", str(studies), "--port", "99999"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --port must be within 0-65535, got 99999"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["label-server", "--studies", str(studies), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port} ("), err
