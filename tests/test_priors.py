"""Infection priors for the multi-class head: out-of-fold maps (cross-fitting) and reading them back by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from covseg.engines.training.priors import crossfit_items, items_with_priors, out_of_fold_priors


def _constant_logit(value: float) -> nn.Module:
    """A network whose infection logit is ``value`` everywhere."""
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(value)
    return conv.eval()


def _item(name: str, shape: tuple[int, int]) -> dict:
    return {"name": name, "image": np.random.default_rng(0).random((1, *shape), dtype=np.float32)}


def test_out_of_fold_priors_take_each_part_from_its_own_fold_network():
    parts = [[_item("a", (40, 30)), _item("b", (36, 36))], [_item("c", (20, 44))]]
    maps = out_of_fold_priors([_constant_logit(-2.0), _constant_logit(2.0)], parts, image_size=32)
    assert sorted(maps) == ["a", "b", "c"]
    assert maps["a"].shape == (1, 40, 30) and maps["c"].shape == (1, 20, 44)
    assert np.allclose(maps["a"], 1 / (1 + np.exp(2.0)), atol=2e-3)
    assert np.allclose(maps["b"], 1 / (1 + np.exp(2.0)), atol=2e-3)
    assert np.allclose(maps["c"], 1 / (1 + np.exp(-2.0)), atol=2e-3)
    with pytest.raises(ValueError, match="a is held out by two folds"):
        out_of_fold_priors([_constant_logit(0.0)] * 2, [[parts[0][0]], [parts[0][0]]], image_size=32)
    with pytest.raises(ValueError, match="2 fold networks for 1 held-out parts"):
        out_of_fold_priors([_constant_logit(0.0)] * 2, parts[:1], image_size=32)


def test_crossfit_items_read_maps_by_name_and_name_the_file_and_slice_on_errors(tmp_path):
    items = [_item("a", (8, 6)), _item("b", (5, 5))]
    file = tmp_path / "oof.npz"
    np.savez(file, a=np.full((1, 8, 6), 0.25, np.float16), b=np.full((1, 5, 5), 0.75, np.float16))
    out = crossfit_items(items, file)
    assert [it["name"] for it in out] == ["a", "b"]
    assert float(out[0]["prior"].mean()) == 0.25 and float(out[1]["clean_prior"].mean()) == 0.75
    with pytest.raises(ValueError, match=r"oof.npz: no out-of-fold prior for c"):
        crossfit_items([*items, _item("c", (5, 5))], file)
    with pytest.raises(ValueError, match=r"oof.npz: prior of b has shape \(5, 5\), image \(6, 5\)"):
        crossfit_items([_item("b", (6, 5))], file)
    with pytest.raises(FileNotFoundError, match="missing.npz: no out-of-fold priors"):
        crossfit_items(items, tmp_path / "missing.npz")
    via = items_with_priors(None, items, tmp_path / "cache", "crossfit", crossfit_file=file)
    assert np.array_equal(via[1]["prior"], out[1]["prior"])
    with pytest.raises(ValueError, match="needs the out-of-fold priors file"):
        items_with_priors(None, items, tmp_path / "cache", "crossfit")
