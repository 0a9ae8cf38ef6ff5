"""JCS slice classifier: network, image mixing, activation maps (Eq. 1-2), labels.csv items, metrics, bundle."""

from __future__ import annotations

import csv
import json
import math
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from utils import REPO, monai_bundle_run, run_ok

from covseg.engines.inference.activation import activation_maps, stage_activation
from covseg.engines.training.classifier import mixup
from covseg.io.classification import labelled_slices
from covseg.metrics.classification import auc_interval, classification_scores, rank_auc, roc_auc
from covseg.networks.classifier import SliceClassifier, covid_probability, encoder_from_infnet
from covseg.networks.infnet import InfNet
from covseg.networks.outputs import ClassifierOutput
from covseg.networks.registry import get_network, network_spec

BUNDLE = REPO / "bundles" / "jcs_classifier"


def test_network_returns_logits_in_eval_and_last_stage_features_in_training(one_torch_thread):
    net = get_network("jcs_classifier").eval()
    assert network_spec("jcs_classifier").task == "classifier"
    x = torch.rand(2, 1, 64, 64)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)  # as MONAI's bundle tools expect
    trained = net.train()(x)
    assert isinstance(trained, ClassifierOutput)
    assert trained.logits.shape == (2, 2) and trained.features.shape == (2, 2048, 2, 2)
    net.eval()
    p = covid_probability(out)
    # An untrained net in eval mode can saturate the softmax, so check the mapping rather than 0 < p < 1.
    assert p.shape == (2,) and bool(((p >= 0) & (p <= 1)).all())
    logits = torch.tensor([[0.0, 0.0], [0.0, 20.0], [3.0, -3.0]])
    assert torch.allclose(covid_probability(logits), torch.sigmoid(logits[:, 1] - logits[:, 0]), atol=1e-6)


def test_frozen_stages_get_no_gradient_and_stay_in_eval_mode(one_torch_thread):
    net = SliceClassifier(frozen_stages=2).train()
    assert not net.backbone.stem.training and not net.backbone.layer1.training and net.backbone.layer2.training
    net(torch.rand(2, 1, 64, 64)).logits.sum().backward()
    assert all(p.grad is None for p in net.backbone.layer1.parameters())
    assert all(p.grad is not None for p in net.backbone.layer4.parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        SliceClassifier(frozen_stages=6)


def test_encoder_initialised_from_infnet_weights(tmp_path):
    infnet = InfNet()
    torch.save({k: v.half() for k, v in infnet.state_dict().items()}, tmp_path / "infnet.pt")
    net = encoder_from_infnet(SliceClassifier(), tmp_path / "infnet.pt")
    want = infnet.backbone.layer3[0].reduce[0].weight.half().float()
    assert torch.equal(net.backbone.layer3[0].reduce[0].weight, want)
    torch.save({"fc.weight": torch.zeros(2, 3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'backbone"):
        encoder_from_infnet(SliceClassifier(), tmp_path / "other.pt")


def test_mixup_mixes_images_and_labels_with_one_lambda():
    torch.manual_seed(0)
    np.random.seed(0)
    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(6)])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    mixed, targets = mixup(x, y, alpha=0.5)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    # each mixed image is lam * x_i + (1 - lam) * x_j: its value lies between the two sources
    lam_from_targets = None
    for i in range(6):
        v = float(mixed[i, 0, 0, 0])
        assert torch.allclose(mixed[i], torch.full_like(mixed[i], v))
        if y[i] == 1 and abs(v - i) > 1e-6:
            lam_from_targets = float(targets[i, 1])
    assert lam_from_targets is None or 0.0 <= lam_from_targets <= 1.0
    plain, one_hot = mixup(x, y, alpha=0.0)
    assert torch.equal(plain, x) and torch.equal(one_hot.argmax(1), y)


def test_stage_activation_follows_eq_1_and_2():
    feats = torch.rand(1, 3, 4, 4, requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 0.5])
    prob = (feats.mean(dim=(2, 3)) * weights).sum(dim=1)  # d prob / d X^k_ij = w_k / 16
    terms = (weights / 16)[:, None, None] * feats[0].detach()
    assert torch.allclose(stage_activation(prob, feats)[0], torch.relu(terms.sum(0)), atol=1e-6)  # Grad-CAM
    assert torch.allclose(stage_activation(prob, feats, "channel")[0], torch.relu(terms).sum(0), atol=1e-6)
    with pytest.raises(ValueError, match="relu"):
        stage_activation(prob, feats, "inside")


def test_activation_is_zero_where_evidence_against_outweighs_evidence_for():
    # channel 0 argues for COVID-19 everywhere, channel 1 (twice as strongly) against it only in the right column
    feats = torch.zeros(1, 2, 1, 2)
    feats[0, 0] = 1.0
    feats[0, 1, 0, 1] = 1.0
    feats.requires_grad_(True)
    prob = (feats.mean(dim=(2, 3)) * torch.tensor([1.0, -2.0])).sum(dim=1)
    assert stage_activation(prob, feats)[0].tolist() == [[0.5, 0.0]]
    assert stage_activation(prob, feats, "channel")[0].tolist() == [[0.5, 0.5]]  # Eq. 2 as printed: blind to it


def test_activation_maps_shape_range_and_no_parameter_gradients(one_torch_thread):
    net = SliceClassifier()
    am, prob = activation_maps(net, torch.rand(2, 1, 96, 96))
    assert am.shape == (2, 96, 96) and prob.shape == (2,)
    assert float(am.min()) >= 0.0 and float(am.max()) <= 1.0 + 1e-6
    assert all(p.grad is None for p in net.parameters())


def test_eval_transforms_show_a_slice_in_the_semiseg_window_when_it_names_its_own():
    from covseg.transforms.classification import classifier_eval_transforms
    from covseg.transforms.intensity import SEMISEG_CORONACASES_WINDOW, window_hu

    hu = np.linspace(-1000.0, 200.0, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    wide = window_hu(hu, *SEMISEG_CORONACASES_WINDOW)
    tf = classifier_eval_transforms(64)
    shown = np.asarray(tf({"image": wide, "window": SEMISEG_CORONACASES_WINDOW})["image"])
    np.testing.assert_allclose(shown, window_hu(hu), atol=1e-4)
    as_is = np.asarray(tf({"image": wide})["image"])
    np.testing.assert_allclose(as_is, wide, atol=1e-6)


def test_classification_metrics_known_values():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    s = classification_scores([0.9, 0.6, 0.2, 0.7, 0.1], [1, 1, 1, 0, 0])
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (2, 1, 1, 1)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(0.6)



def test_auc_interval_resamples_patients_not_slices():
    """The interval holds the AUC, is (1, 1) for a perfect ranking, NaN with one class, narrows with more
    patients, and is wider by groups than by slices when a patient's slices share its offset (they are not
    independent)."""
    rng = np.random.default_rng(0)

    def patients(count: int, per: int, spread: float):
        labels = np.repeat(np.arange(count) % 2, per)
        offsets = np.repeat(rng.normal(0.0, spread, count), per)
        scores = labels * 0.8 + offsets + rng.normal(0.0, 0.3, labels.size)
        return scores, labels, np.repeat([f"p{i}" for i in range(count)], per)

    scores, labels, groups = patients(20, 10, 1.0)
    low, high = auc_interval(scores, labels, groups, resamples=300)
    assert low < roc_auc(scores, labels) < high
    by_slice = auc_interval(scores, labels, None, resamples=300)
    assert (high - low) > 1.5 * (by_slice[1] - by_slice[0])
    more = auc_interval(*patients(80, 10, 1.0), resamples=300)
    assert (more[1] - more[0]) < 0.75 * (high - low)
    assert auc_interval([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], ["a", "b", "c", "d"], resamples=50) == (1.0, 1.0)
    assert all(math.isnan(v) for v in auc_interval([0.1, 0.2], [1, 1], ["a", "b"], resamples=10))
    tied = np.round(scores, 1)  # the resamples' AUC (ranks, ties one half) is MONAI's
    assert rank_auc(tied, labels) == pytest.approx(roc_auc(tied, labels), abs=1e-12)
    assert math.isnan(rank_auc(np.array([0.3, 0.4]), np.array([0, 0])))



def test_evaluate_writes_strict_json_with_the_auc_interval(tmp_path):
    """metrics.json is strict JSON (a folder of one class has no AUC: null, never NaN) and gives each set the
    AUC's interval."""
    from covseg.engines.training.classifier import evaluate_classifier

    class MeanBrightness(torch.nn.Module):  # brighter slice -> higher P(COVID-19)
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], dim=1) * 10

    rng = np.random.default_rng(0)
    items = []
    for i in range(12):
        level = 40 + 15 * i + int(rng.integers(0, 10))
        name = f"s{i}.png"
        Image.fromarray(np.full((40, 48), level, np.uint8)).save(tmp_path / name)
        label = int(i % 3 != 0)
        items.append({"name": name, "image": str(tmp_path / name), "label": label, "group": f"{label}-{i // 4}",
                      "source": "a" if i < 6 else "b", "split": "val"})
    only_covid = [dict(i, source="c") for i in items if i["label"] == 1]
    metrics = evaluate_classifier(MeanBrightness(), items + only_covid, tmp_path / "ev", image_size=32)
    text = (tmp_path / "ev" / "metrics.json").read_text()
    assert "NaN" not in text
    written = json.loads(text)
    assert written["c/val"]["auc"] is None and written["c/val"]["auc_ci95"] == [None, None]
    low, high = written["a/val"]["auc_ci95"]
    assert 0.0 <= low <= metrics["a/val"]["auc"] <= high <= 1.0


def _slice_folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, _ in rows:
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(root / name)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    return root


def test_labelled_slices_reads_any_folder_and_names_bad_rows(tmp_path):
    folder = _slice_folder(tmp_path / "ok", [("a.png", "covid"), ("b.png", "noncovid"), ("c.png", "1")])
    items = labelled_slices(folder, sources=["x"], splits=["test"])  # no such columns: not filtered
    assert [(Path(i["image"]).name, i["label"]) for i in items] == [("a.png", 1), ("b.png", 0), ("c.png", 1)]
    bad = _slice_folder(tmp_path / "bad", [("a.png", "maybe")])
    with pytest.raises(ValueError, match=r"labels.csv:2: label 'maybe'"):
        labelled_slices(bad)
    (folder / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png"):
        labelled_slices(folder)


def test_labelled_slices_of_the_real_splits(cls_dir):
    test = labelled_slices(cls_dir, "sars-cov-2-ct", "test")
    train = labelled_slices(cls_dir, "sars-cov-2-ct", "train")
    assert len(test) == 525 and {i["label"] for i in test} == {0, 1}
    assert not {i["group"] for i in test} & {i["group"] for i in train}  # group-disjoint


_bundle = partial(monai_bundle_run, BUNDLE)


@pytest.mark.slow
def test_tiny_training_writes_checkpoint_resumes_and_evaluates(cls_dir, tmp_path):
    out = tmp_path / "run"
    common = ["--dataset_dir", str(cls_dir), "--output_dir", str(out), "--train_limit", "4", "--image_size", "64",
              "--batch_size", "4", "--warmup_steps", "1"]
    first = run_ok(_bundle("training", "train.yaml", "--max_epochs", "1", *common))
    assert "epoch 1 loss" in first.stdout and (out / "checkpoint_1.pt").exists()
    second = run_ok(_bundle("training", "train.yaml", "--max_epochs", "2", *common))
    assert "epoch 2 loss" in second.stdout and "epoch 1 loss" not in second.stdout  # resumed, not restarted
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all(0.0 <= h["auc"] <= 1.0 for h in history)
    state = torch.load(out / "model_best.pt", weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (2, 2048)

    folder = _slice_folder(tmp_path / "slices", [("p.png", "covid"), ("n.png", "noncovid"), ("q.png", "covid")])
    ev = tmp_path / "eval"
    run_ok(_bundle("evaluate", "evaluate.yaml", "--dataset_dir", str(folder), "--output_dir", str(ev),
                   "--weights", str(out / "model_final.pt"), "--image_size", "64"))
    rows = list(csv.DictReader((ev / "scores.csv").read_text().splitlines()))
    assert [(r["file"], r["label"]) for r in rows] == [("p.png", "1"), ("n.png", "0"), ("q.png", "1")]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert json.loads((ev / "metrics.json").read_text())["all"]["n"] == 3
    shutil.rmtree(out)


def test_snapshot_average_is_validated_and_kept_when_it_scores_higher(tmp_path, one_torch_thread):
    from covseg.engines.training.averaging import average_states
    from covseg.engines.training.classifier import build_classifier_trainer
    from covseg.networks.loading import read_state

    torch.manual_seed(0)
    items = [{"image": torch.rand(1, 32, 32), "label": i % 2, "source": "s", "name": f"{i}.png"} for i in range(8)]
    loader = torch.utils.data.DataLoader(items, batch_size=4)
    out = tmp_path / "run"
    trainer = build_classifier_trainer(SliceClassifier(), loader, out, val_loader=loader, max_epochs=3,
                                       warmup_steps=1, select_sources=["s"], progress=False, snapshot_start=2)
    trainer.run(loader, max_epochs=3)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, "swa"] and history[-1]["snapshots"] == 2
    expected = average_states([read_state(out / "snapshot_2.pt"), read_state(out / "snapshot_3.pt")])
    swa = read_state(out / "model_swa.pt")
    assert all(torch.equal(swa[k], expected[k]) for k in expected)
    best = json.loads((out / "best.json").read_text())
    scores = {h["epoch"]: h["score"] for h in history}
    assert best["epoch"] == max(scores, key=scores.get)  # the first of a tie wins: strictly higher replaces
    if best["epoch"] == "swa":
        assert all(torch.equal(read_state(out / "model_best.pt")[k], swa[k]) for k in swa)


def test_source_weights_give_each_source_the_same_share():
    from covseg.engines.training.sampling import source_weights

    items = [{"source": "big"}] * 6 + [{"source": "small"}] * 2
    weights = source_weights(items)
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[:6].sum().item() == pytest.approx(0.5) and weights[6:].sum().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        source_weights([])


def test_source_balanced_draws_follow_seed_and_epoch_and_balance_the_sources():
    from covseg.engines.training.sampling import SourceBalancedSampler

    items = [{"source": "big"}] * 900 + [{"source": "small"}] * 100
    sampler = SourceBalancedSampler(items, seed=3)
    first = list(sampler)
    sampler.set_epoch(2)
    second = list(sampler)
    again = SourceBalancedSampler(items, seed=3)
    again.set_epoch(2)
    assert len(first) == len(second) == len(sampler) == 1000
    assert second == list(again) and first != second  # a resumed run draws what the uninterrupted one drew
    small_share = np.mean([i >= 900 for i in first + second])
    assert 0.45 < small_share < 0.55  # a plain shuffle: 0.10


def test_classifier_trainer_tells_an_epoch_sampler_each_epoch(tmp_path, one_torch_thread):
    from covseg.engines.training.classifier import build_classifier_trainer
    from covseg.engines.training.sampling import SourceBalancedSampler

    items = [{"image": torch.rand(1, 32, 32), "label": i % 2, "source": "s" if i < 6 else "t"} for i in range(8)]
    seen: list[int] = []

    class Recording(SourceBalancedSampler):
        def set_epoch(self, epoch: int) -> None:
            seen.append(epoch)
            super().set_epoch(epoch)

    loader = torch.utils.data.DataLoader(items, batch_size=4, sampler=Recording(items, seed=0))
    trainer = build_classifier_trainer(SliceClassifier(), loader, tmp_path / "run", max_epochs=2, warmup_steps=1,
                                       progress=False)
    trainer.run(loader, max_epochs=2)
    assert seen == [1, 2]


def test_classifier_keeps_the_previous_checkpoint_and_a_rerun_of_a_finished_run_trains_nothing(tmp_path,
                                                                                              one_torch_thread):
    from covseg.engines.training.classifier import build_classifier_trainer

    torch.manual_seed(0)
    items = [{"image": torch.rand(1, 32, 32), "label": i % 2, "source": "s", "name": f"{i}.png"} for i in range(8)]
    loader = torch.utils.data.DataLoader(items, batch_size=4)
    out = tmp_path / "run"
    for _ in range(2):  # the same command twice
        trainer = build_classifier_trainer(SliceClassifier(), loader, out, max_epochs=2, warmup_steps=1,
                                           progress=False)
        trainer.run(loader, max_epochs=2)
    # a kill -9 while epoch 2's checkpoint was written would have left epoch 1's (ignite deletes before saving)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]
    history = [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2]  # the rerun trained no epoch
