"""The multi-class bundle: metadata verifies offline, the inference config is a MONAI workflow, and a tiny
train -> evaluate run writes the per-class maps the acceptance check reads."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from PIL import Image
from utils import REPO, monai_bundle_run, run_ok

BUNDLE = REPO / "bundles" / "multiclass_infnet"
CONFIGS = BUNDLE / "configs"
HEAD = {"features": (16, 16, 32, 64, 128, 16), "prior_residual": True}  # network_def of the configs


_cmd = partial(monai_bundle_run, BUNDLE)


def test_inference_config_passes_monai_check_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    from covseg.engines.training.checkpoints import save_weights
    from covseg.networks.registry import get_network

    weights = tmp_path / "head.pt"
    save_weights(get_network("multiclass_unet", **HEAD), weights, half=True)
    (tmp_path / "slices").mkdir()
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.yaml"), workflow_type="infer",
                              meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                              bundle_root=str(BUNDLE), dataset_dir=str(tmp_path / "slices"), weights=str(weights))
    workflow.initialize()
    assert workflow.check_properties() == []
    net = workflow.parser.get_parsed_content("network")
    out = net.eval()(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64)


@pytest.mark.slow
def test_tiny_train_then_evaluate_writes_class_maps(semiseg_dir, tmp_path):
    run = tmp_path / "run"
    run_ok(_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                "--max_epochs", "1", "--train_limit", "4", "--image_size", "64", "--batch_size", "2",
                "--prior_draws", "2", "--prior_image_size", "64"))
    assert (run / "model_final.pt").exists() and (run / "priors" / "train-clean.npz").exists()
    out = tmp_path / "eval"
    # one pass of the binary Inf-Net (at its 352²) per slice, not four: the maps and tables are what is checked
    # here; flip averaging has its own test (test_class_merge) and the evaluate workflow's wiring is checked in
    # test_bundle_workflows
    proc = run_ok(_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(out),
                       "--weights", str(run / "model_final.pt"), "--image_size", "64", "--flip_average", "false"))
    assert "| ggo |" in proc.stdout and "| consolidation |" in proc.stdout
    masks = sorted((semiseg_dir / "test" / "masks-multiclass").glob("*.png"))
    for cls in ("ggo", "consolidation"):
        preds = sorted((out / f"predictions-{cls}").glob("*.png"))
        assert [p.name for p in preds] == [m.name for m in masks] and len(preds) == 48
        for pred, mask in zip(preds[:4], masks[:4]):
            with Image.open(pred) as p, Image.open(mask) as m:
                assert p.size == m.size and p.mode == "L"
    figures = json.loads((out / "metrics.json").read_text())
    assert set(figures) == {"ggo", "consolidation"}
    assert all(0.0 <= f["meanDic"] <= 1.0 and f["n_images"] == 48 for f in figures.values())


def test_the_documented_training_command_gives_one_answer(semiseg_dir, tmp_path):
    """Two runs of one training command train identical weights: the head's initial weights, the loader's order
    and MONAI's random transforms all follow the config's ``seed`` (train.yaml ``initialize``, build_trainer)."""
    weights = []
    for name in ("a", "b"):
        run = tmp_path / name
        run_ok(_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                    "--max_epochs", "2", "--train_limit", "4", "--image_size", "64", "--batch_size", "2",
                    "--prior_draws", "2", "--prior_image_size", "64"))
        weights.append(torch.load(run / "model_final.pt", map_location="cpu", weights_only=True))
    a, b = weights
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"two runs of one command differ in {len(differ)} tensors, e.g. {differ[:3]}"


def test_crossfit_priors_reach_the_training_and_validation_items(semiseg_dir, tmp_path):
    """``--prior_perturb crossfit`` gives the training slices the out-of-fold maps of ``prior_crossfit``;
    ``--val_prior crossfit`` does the same for the validation slices, which otherwise get the binary model's maps."""
    import numpy as np
    from monai.bundle import ConfigParser

    from covseg.io.slices import semiseg_items

    items = semiseg_items(semiseg_dir, "train", 4)
    maps = {it["name"]: np.full((1, *it["image"].shape[-2:]), (i + 1) / 8, np.float16) for i, it in enumerate(items)}
    np.savez(tmp_path / "oof.npz", **maps)

    def parsed(val_prior: str) -> tuple[list[dict], list[dict]]:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.yaml"))
        parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(semiseg_dir), "output_dir": str(tmp_path),
                       "train_limit": 4, "device": "cpu", "prior_perturb": "crossfit", "val_prior": val_prior,
                       "prior_crossfit": str(tmp_path / "oof.npz"), "prior_image_size": 64})
        parser.parse()
        return parser.get_parsed_content("train_items"), parser.get_parsed_content("val_items")

    train, val = parsed("crossfit")
    assert len(train) == 3 and len(val) == 1
    for it in train + val:
        assert np.array_equal(it["prior"], maps[it["name"]]) and np.array_equal(it["clean_prior"], it["prior"])
    _, val = parsed("none")  # the binary model's map of the slice, computed at prior_image_size
    assert not np.array_equal(val[0]["prior"], maps[val[0]["name"]])
    assert (tmp_path / "priors" / "val-clean.npz").exists()


def test_pseudo_labels_join_the_training_slices_each_epoch(semiseg_dir, tmp_path):
    """``--pseudo_labels FILE`` adds a pseudo-labelled set to the training data, ``pseudo_per_epoch`` of it each
    epoch beside every labelled slice; without it the loader shuffles the labelled slices as before."""
    import numpy as np
    from monai.bundle import ConfigParser
    from torch.utils.data import RandomSampler

    from covseg.engines.training.pseudo_classes import save_pseudo_set
    from covseg.engines.training.sampling import LabelledPlusDraws

    rng = np.random.default_rng(0)
    shapes = [(48, 64)] * 6
    save_pseudo_set(tmp_path / "pseudo.npz", [f"u{i}" for i in range(6)], [rng.random(s) for s in shapes],
                    [rng.random(s) for s in shapes], [rng.integers(0, 3, s) for s in shapes])

    def loader(**extra: object):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.yaml"))
        parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(semiseg_dir), "output_dir": str(tmp_path),
                       "train_limit": 4, "device": "cpu", "prior_perturb": "none", "prior_image_size": 64,
                       "image_size": 64, **extra})
        parser.parse()
        return parser.get_parsed_content("train#dataloader")

    mixed = loader(pseudo_labels=str(tmp_path / "pseudo.npz"), pseudo_per_epoch=2)
    assert isinstance(mixed.sampler, LabelledPlusDraws) and len(mixed.dataset) == 3 + 6
    drawn = list(mixed.sampler)
    assert sorted(i for i in drawn if i < 3) == [0, 1, 2] and len(drawn) == 5
    batch = next(iter(mixed))
    assert batch["image"].shape[1:] == (2, 64, 64) and batch["label"].shape[1:] == (1, 64, 64)
    plain = loader()
    assert isinstance(plain.sampler, RandomSampler) and len(plain.dataset) == 3
