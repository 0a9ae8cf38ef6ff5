"""Semi-Inf-Net's whole procedure (rounds of pseudo labels, then the labelled fine-tune) on a tiny budget: killed
with SIGKILL in the middle of a round (or of the fine-tune) and resumed, it labels every pool slice exactly once,
in exactly one round, and ends with the weights of an uninterrupted run with the same seed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from PIL import Image
from torch import nn
from utils import bright_square_slices

import covseg.engines.training.semi_supervised as semi_supervised
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.training.checkpoints import save_weights
from covseg.engines.training.semi_procedure import build_semi_inf_net, seeded_init
from covseg.engines.training.semi_supervised import write_pseudo_labels

CTX = multiprocessing.get_context("fork")
POOL = 8
OPTIONS = {"labeller": "student", "per_round": 3, "pseudo_epochs": 2, "pseudo_lr": 1e-2, "max_epochs": 3,
           "finetune_lr": 1e-2, "snapshot_start": 2, "val_interval": 1, "image_size": 32, "batch_size": 2,
           "scales": (1.0,), "seed": 3, "device": "cpu", "bf16": False}


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


def _inputs(root: Path) -> dict:
    """Pool slices, two labelled slices (one for validation) and saved teacher weights, made once under ``root``."""
    pool = bright_square_slices(root / "pool", POOL, size=40)
    grey = np.full((40, 40), 0.15, np.float32)
    grey[8:28, 12:30] = 0.85
    labelled = [{"name": f"l{i}", "image": np.rot90(grey, i).copy()[None],
                 "label": (np.rot90(grey, i) > 0.5).astype(np.float32)[None]} for i in range(2)]
    teacher = root / "teacher.pt"
    if not teacher.exists():
        save_weights(seeded_init(_net, 1), teacher)
    return {"pool": pool, "labelled": labelled[:1], "val": labelled[1:], "teacher": teacher}


def _procedure(inputs: dict, out: Path, **options):
    return build_semi_inf_net(seeded_init(_net, 0), inputs["teacher"], inputs["labelled"], inputs["pool"], out,
                              val_items=inputs["val"], **{**OPTIONS, **options})


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _run_and_die(inputs: dict, out: str, point: str) -> None:
    """Child: run the procedure and SIGKILL itself at ``point``."""
    torch.set_num_threads(1)
    if point == "labelling":  # after the first pseudo label of round 2 is on disk
        write_grey, written = semi_supervised.write_grey, []

        def write_then_die(path, grey):
            target = write_grey(path, grey)
            written.append(path)
            if len(written) == OPTIONS["per_round"] + 1:
                _kill()
            return target

        semi_supervised.write_grey = write_then_die
    else:  # in the second epoch of round 2's training, or of the fine-tune
        folder = "round_002" if point == "training" else "finetune"
        import covseg.engines.training.semi_procedure as procedure

        for module in (semi_supervised, procedure):
            build = module.build_trainer

            def build_then_die(network, loader, output_dir, *args, _build=build, **kwargs):
                trainer = _build(network, loader, output_dir, *args, **kwargs)
                if Path(output_dir).name == folder:
                    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                                              lambda e: _kill() if e.state.epoch == 2 else None)
                return trainer

            module.build_trainer = build_then_die
    _procedure(inputs, Path(out)).run()
    os._exit(3)  # not reached when the kill point is


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (same inputs, same seed) and its pseudo labels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("semi")
    inputs = _inputs(root)
    final = _procedure(inputs, root / "reference").run()
    torch.set_num_threads(threads)
    labels = {p.name: p.read_bytes() for p in (root / "reference" / "pseudo_labels").glob("*.png")}
    return {"root": root, "inputs": inputs, "weights": _weights(final), "labels": labels}


@pytest.mark.parametrize("point", ["labelling", "training", "finetune"])
def test_killed_in_a_round_resumes_to_the_uninterrupted_result(reference, point, one_torch_thread):
    inputs, out = reference["inputs"], reference["root"] / f"killed-{point}"
    child = CTX.Process(target=_run_and_die, args=(inputs, str(out), point))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL
    assert not (out / "model_final.pt").exists()
    labels = out / "pseudo_labels"
    before = {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png")}
    if point == "labelling":
        assert len(before) == OPTIONS["per_round"] + 1  # round 1 and one slice of round 2

    final = _procedure(inputs, out).run()

    assert final == out / "model_final.pt"
    names = [p.stem for p in labels.glob("*.png")]
    assert sorted(names) == sorted(item["name"] for item in inputs["pool"])  # no slice lost, none twice
    listed = [line for f in sorted(out.glob("round_*/slices.txt")) for line in f.read_text().split()]
    assert sorted(listed) == sorted(names) and len(listed) == POOL  # each slice in exactly one round
    assert sorted(p.parent.name for p in out.glob("round_*/model_final.pt")) == ["round_001", "round_002",
                                                                                   "round_003"]
    assert {n: (labels / n).stat().st_mtime_ns for n in before} == before  # nothing labelled was relabelled
    assert {p.name: p.read_bytes() for p in labels.glob("*.png")} == reference["labels"]
    resumed, expected = _weights(final), reference["weights"]
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected), "resumed weights differ"
    assert not list(out.glob("round_*/checkpoint_*.pt"))  # finished rounds keep only their weights


def test_a_finished_run_is_not_run_again(reference):
    out = reference["root"] / "reference"
    final = out / "model_final.pt"
    stamp = final.stat().st_mtime_ns
    assert _procedure(reference["inputs"], out).run() == final and final.stat().st_mtime_ns == stamp
    assert (out / "finetune" / "model_swa.pt").exists() and (out / "round_003" / "round.json").exists()


def test_the_teacher_labels_every_round_and_only_the_newest_round_weights_stay(tmp_path, one_torch_thread):
    inputs = _inputs(tmp_path)
    teacher = nn.Conv2d(1, 1, 1)  # the pseudo label is exactly grey > 0.5
    with torch.no_grad():
        teacher.weight.fill_(20.0)
        teacher.bias.fill_(-10.0)
    save_weights(teacher, tmp_path / "bright.pt")
    procedure = build_semi_inf_net(seeded_init(lambda: nn.Conv2d(1, 1, 1), 0), tmp_path / "bright.pt",
                                   inputs["labelled"], inputs["pool"], tmp_path / "run", val_items=inputs["val"],
                                   **{**OPTIONS, "labeller": "teacher", "samples_per_round": 3,
                                      "keep_round_weights": False, "max_epochs": 1, "snapshot_start": None})
    procedure.run()
    predictor = SlicePredictor(teacher, image_size=OPTIONS["image_size"], bf16=False, channels_last=False)
    write_pseudo_labels(predictor, inputs["pool"], tmp_path / "teacher_labels")
    for item in inputs["pool"]:
        label = np.asarray(Image.open(tmp_path / "run" / "pseudo_labels" / f"{item['name']}.png"))
        expected = tmp_path / "teacher_labels" / f"{item['name']}.png"
        np.testing.assert_array_equal(label, np.asarray(Image.open(expected)))
        assert (label == 255).sum() > 100
    assert [p.parent.name for p in (tmp_path / "run").glob("round_*/model_final.pt")] == ["round_003"]
    curve = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    assert curve[0] == "round,slices,train_size,seconds,val_dice,val_mae" and len(curve) == 4
    assert [row.split(",")[:3] for row in curve[1:]] == [["1", "3", "4"], ["2", "3", "7"], ["3", "2", "9"]]


def test_bad_settings_are_refused(tmp_path):
    inputs = _inputs(tmp_path)
    with pytest.raises(ValueError, match="student_init"):
        _procedure(inputs, tmp_path / "a", student_init="warm")
    with pytest.raises(ValueError, match="labeller"):
        _procedure(inputs, tmp_path / "b", labeller="oracle")
    with pytest.raises(ValueError, match="teacher_weights"):
        build_semi_inf_net(_net(), None, [], [], tmp_path / "c")


def test_killed_after_the_last_checkpoint_finishes_without_training_again(reference, capsys, one_torch_thread):
    """A kill between the fine-tune's last checkpoint and its final weights: the resume only writes them (ignite
    would start a finished state over)."""
    out = reference["root"] / "killed-at-the-end"
    shutil.copytree(reference["root"] / "reference", out)
    for name in ("model_final.pt", "finetune/model_final.pt", "finetune/model_swa.pt"):
        (out / name).unlink()
    capsys.readouterr()
    final = _procedure(reference["inputs"], out).run()
    assert " loss " not in capsys.readouterr().out  # no epoch was trained
    expected = reference["root"] / "reference"
    for name in ("finetune/model_final.pt", "finetune/model_swa.pt"):
        a, b = _weights(out / name), _weights(expected / name)
        assert all(torch.equal(a[k], b[k]) for k in b), name
    assert all(torch.equal(v, reference["weights"][k]) for k, v in _weights(final).items())


def test_passes_rerun_the_rounds_without_relabelling_and_zero_finetune_epochs_keep_the_last_round(
        tmp_path, one_torch_thread, monkeypatch):
    inputs = _inputs(tmp_path)
    written: list[str] = []
    write_grey = semi_supervised.write_grey

    def counting(path, grey):
        written.append(Path(path).stem)
        return write_grey(path, grey)

    monkeypatch.setattr(semi_supervised, "write_grey", counting)
    out = tmp_path / "run"
    final = _procedure(inputs, out, labeller="teacher", student_init="teacher", per_round=None, pseudo_epochs=1,
                       pseudo_passes=2, max_epochs=0).run()
    curve = (out / "rounds.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:3] for row in curve] == [["1", str(POOL), str(POOL + 1)], ["2", str(POOL), str(POOL + 1)]]
    assert sorted(written) == sorted(i["name"] for i in inputs["pool"])  # each slice labelled once, in pass 1
    assert len(list((out / "pseudo_labels").glob("*.png"))) == POOL
    assert not (out / "finetune").exists()
    last = _weights(out / "round_002" / "model_final.pt")
    assert all(torch.equal(v, last[k]) for k, v in _weights(final).items())
    first = _weights(out / "round_001" / "model_final.pt")
    assert any(not torch.equal(v, first[k]) for k, v in last.items())  # the second pass trained on
    with pytest.raises(ValueError, match="passes"):
        _procedure(inputs, tmp_path / "bad", pseudo_passes=0)


def test_student_weight_blends_the_last_student_with_the_teacher(tmp_path, one_torch_thread):
    """WiSE-FT step: model_final.pt = w x the student + (1 - w) x the teacher, the student kept beside it."""
    inputs = _inputs(tmp_path)
    out = tmp_path / "run"
    final = _procedure(inputs, out, labeller="teacher", student_init="teacher", per_round=None, pseudo_epochs=1,
                       max_epochs=0, student_weight=0.25).run()
    student, teacher, blended = _weights(out / "model_student.pt"), _weights(inputs["teacher"]), _weights(final)
    assert all(torch.equal(v, student[k]) for k, v in _weights(out / "round_001" / "model_final.pt").items())
    for key, value in blended.items():
        torch.testing.assert_close(value, 0.25 * student[key] + 0.75 * teacher[key])
    assert any(not torch.equal(student[k], teacher[k]) for k in student)  # the blend is not trivially either end
    with pytest.raises(ValueError, match="student_init 'teacher'"):
        _procedure(inputs, tmp_path / "fresh", student_init="fresh", student_weight=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _procedure(inputs, tmp_path / "big", student_init="teacher", student_weight=1.5)
