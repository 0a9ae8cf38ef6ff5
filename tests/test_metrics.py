"""Fast tests of covseg.metrics on small synthetic arrays with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from PIL import Image

from covseg.metrics import binary
from covseg.metrics.binary import binary_scores
from covseg.metrics.folders import evaluate_folders
from covseg.metrics.handlers import BinaryMetrics, PaperMetrics, ToolboxDice, ToolboxMetrics
from covseg.metrics.paired import paired_difference
from covseg.metrics.tables import format_table_row
from covseg.metrics.toolbox import (
    EPS,
    THRESHOLDS,
    ToolboxAccumulator,
    binarize_gt,
    normalize_map,
    score_map,
    score_with_curves,
)

N_T = 256


def _square_mask(size: int = 10, lo: int = 2, hi: int = 7) -> np.ndarray:
    gt = np.zeros((size, size), np.uint8)
    gt[lo:hi, lo:hi] = 255
    return gt


# ---------------------------------------------------------------- toolbox: conventions


def test_thresholds_are_matlab_1_to_0_in_256_steps():
    assert THRESHOLDS.shape == (N_T,)
    assert THRESHOLDS[0] == 1.0 and THRESHOLDS[-1] == 0.0
    assert np.all(np.diff(THRESHOLDS) < 0)
    exact = (255 - np.arange(N_T)) / 255
    assert np.all(np.abs(THRESHOLDS - exact) <= np.spacing(1.0))


def test_normalize_map_min_max_and_constant():
    m = normalize_map(np.array([[50, 100], [150, 50]], np.uint8))
    np.testing.assert_allclose(m, [[0.0, 0.5], [1.0, 0.0]])
    # a constant map is left as im2double gives it (mapminmax leaves constant rows alone)
    np.testing.assert_allclose(normalize_map(np.full((2, 2), 0.7, np.float32)), 0.7, rtol=1e-6)
    with pytest.raises(ValueError):
        normalize_map(np.array([[np.nan, 1.0]]))


def test_binarize_gt_is_gt_above_128():
    np.testing.assert_array_equal(binarize_gt(np.array([[128, 129], [0, 255]], np.uint8)),
                                  [[False, True], [False, True]])
    with pytest.raises(ValueError, match="0/1"):
        binarize_gt(np.array([[0, 1]], np.uint8))


# ---------------------------------------------------------------- toolbox: hand-worked scores


def test_threshold_averaging_by_hand():
    # normalised map [1, 0 / 0.3, 0], mask [1, 1 / 0, 0]
    pred = np.array([[1.0, 0.0], [0.3, 0.0]])
    gt = np.array([[255, 255], [0, 0]], np.uint8)
    s = score_map(pred, gt)
    # t > 0.3 (k = 0..178, 179 thresholds): only the 1.0 pixel -> tp 1, fp 0: Dice 2/3, Sen 1/2, Spe 1
    # 0 < t <= 0.3 (k = 179..254, 76 thresholds): tp 1, fp 1: Dice 1/2, Sen 1/2, Spe 1/2
    # t = 0: everything -> tp 2, fp 2: Dice 2/3, Sen 1, Spe 0
    assert s["meanDic"] == pytest.approx((179 * 2 / 3 + 76 * 0.5 + 2 / 3) / N_T)
    assert s["meanSen"] == pytest.approx((255 * 0.5 + 1.0) / N_T)
    assert s["meanSpe"] == pytest.approx((179 * 1.0 + 76 * 0.5) / N_T)
    assert s["meanPre"] == pytest.approx((179 * 1.0 + 77 * 0.5) / N_T)
    # adaptive threshold 2 * mean = 0.65: only the 1.0 pixel
    assert s["adpDice"] == pytest.approx(2 / 3)
    assert s["adpSen"] == pytest.approx(0.5)
    assert s["adpSpe"] == pytest.approx(1.0)
    assert s["adpPre"] == pytest.approx(1.0)
    assert s["adpIoU"] == pytest.approx(0.5)
    assert s["MAE"] == pytest.approx((0 + 1 + 0.3 + 0) / 4)


def test_perfect_prediction():
    gt = _square_mask()
    n, fg = gt.size, 25
    s = score_map(gt.copy(), gt)
    # every threshold in (0, 1] recovers the mask; t = 0 predicts every pixel (Dice 2fg/(fg+n), Spe 0)
    assert s["meanDic"] == pytest.approx((255 + 2 * fg / (fg + n)) / N_T)
    assert s["meanSen"] == pytest.approx(1.0)
    assert s["meanSpe"] == pytest.approx(255 / N_T)
    assert s["MAE"] == 0.0
    assert s["Sm"] == pytest.approx(1.0)
    # E-phi on map > t: t = 1 gives an empty map (every pixel scores 1/4), the other 255 the mask itself
    assert s["meanEm"] == pytest.approx((0.25 + 255) / N_T * n / (n - 1 + EPS))
    assert s["adpDice"] == pytest.approx(1.0)
    acc = ToolboxAccumulator()
    acc.add(gt, gt)
    assert acc.figures()["maxDic"] == pytest.approx(1.0)


def test_inverted_prediction_scores_zero_except_at_threshold_zero():
    gt = _square_mask()
    n, fg = gt.size, 25
    s = score_map(255 - gt, gt)
    # no true positive at any t > 0, so the toolbox scores 0 there; t = 0 predicts every pixel
    assert s["meanDic"] == pytest.approx(2 * fg / (fg + n) / N_T)
    assert s["meanSen"] == pytest.approx(1 / N_T)
    assert s["meanSpe"] == 0.0
    assert s["adpDice"] == 0.0
    assert s["MAE"] == 1.0
    assert s["Sm"] < 0.1


def test_empty_mask_follows_the_toolbox_rule():
    gt = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4))
    pred[0, 0] = 1.0
    s = score_map(pred, gt)
    # no true positive is possible: the toolbox gives 0 for Dice, Sen and also Spe
    assert s["meanDic"] == s["meanSen"] == s["meanSpe"] == 0.0
    # adaptive E-phi (threshold 2 * 1/16, map > t = one pixel) on an empty mask: 1 - FM summed / (n - 1)
    assert s["adpEm"] == pytest.approx(15 / (16 - 1 + EPS))
    assert s["MAE"] == pytest.approx(1 / 16)


def _em_pixelwise(fm: np.ndarray, gt: np.ndarray) -> float:
    """Enhancedmeasure.m, pixel by pixel."""
    fm, g = fm.astype(float), gt.astype(float)
    if g.sum() == 0:
        enhanced = 1.0 - fm
    elif (1 - g).sum() == 0:
        enhanced = fm
    else:
        a, b = fm - fm.mean(), g - g.mean()
        enhanced = ((2 * a * b / (a * a + b * b + EPS)) + 1) ** 2 / 4
    return float(enhanced.sum() / (g.size - 1 + EPS))


def test_sweep_matches_a_per_threshold_loop():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 256, (12, 9)).astype(np.uint8)  # many pixels sit exactly on thresholds
    gt = np.where(rng.random((12, 9)) < 0.3, 255, 0).astype(np.uint8)
    scores, curves = score_with_curves(pred, gt)
    m, g = normalize_map(pred), gt > 128
    for k, t in enumerate(THRESHOLDS):
        b = m >= t
        tp, fp = np.sum(b & g), np.sum(b & ~g)
        fn, tn = np.sum(~b & g), np.sum(~b & ~g)
        want_dice = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
        want_spe = 0.0 if tp == 0 else tn / (tn + fp)
        assert curves[0, k] == pytest.approx(want_dice), k
        assert curves[2, k] == pytest.approx(want_spe), k
        assert curves[5, k] == pytest.approx(_em_pixelwise(m > t, g)), k
    assert scores["meanEm"] == pytest.approx(curves[5].mean())
    t = min(2 * m.mean(), 1.0)
    assert scores["adpEm"] == pytest.approx(_em_pixelwise(m > t, g))


def test_set_figures_max_of_mean_curve_and_adp_iou():
    gt = _square_mask()
    acc = ToolboxAccumulator()
    curves = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        pred = np.clip(gt / 255 * 0.6 + rng.random(gt.shape) * 0.5, 0, 1)
        acc.add(pred, gt, name=str(seed))
        curves.append(score_with_curves(pred, gt)[1])
    f = acc.figures()
    mean_curves = np.mean(curves, axis=0)
    assert f["maxDic"] == pytest.approx(mean_curves[0].max())
    assert f["maxEm"] == pytest.approx(mean_curves[5].max())
    assert f["meanDic"] == pytest.approx(mean_curves[0].mean())
    assert f["adpIoU"] == pytest.approx(f["adpDice"] / (2 - f["adpDice"]))
    assert f["adpIoUPerImage"] == pytest.approx(np.mean([r["adpIoU"] for r in acc.per_image]))
    assert [r["name"] for r in acc.per_image] == ["0", "1"]


# ---------------------------------------------------------------- toolbox: folders and table


def _save(path, arr):
    Image.fromarray(arr).save(path)


def test_evaluate_folders_matches_stems_resizes_and_orders(tmp_path):
    preds, masks = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir()
    masks.mkdir()
    gt = _square_mask(20, 5, 15)
    for stem in ("10", "2"):
        _save(masks / f"{stem}.png", gt)
    _save(preds / "2.png", gt)
    _save(preds / "10.jpg", np.asarray(Image.fromarray(gt).resize((40, 40), Image.NEAREST)))
    _save(preds / "99.png", gt)  # no mask: ignored
    r = evaluate_folders(preds, masks)
    assert r["n_images"] == 2
    assert [p["name"] for p in r["per_image"]] == ["2", "10"]
    assert [p["resized"] for p in r["per_image"]] == [False, True]
    assert r["per_image"][0]["MAE"] == 0.0
    assert r["per_image"][1]["adpDice"] > 0.9  # the upsampled JPEG, resized back, still fits the mask
    assert r["meanDic"] == pytest.approx(np.mean([p["meanDic"] for p in r["per_image"]]))


def test_evaluate_folders_errors_name_the_path(tmp_path):
    preds, masks = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir()
    masks.mkdir()
    _save(masks / "1.png", _square_mask())
    with pytest.raises(ValueError, match=r"1\.png: missing prediction"):
        evaluate_folders(preds, masks)
    (preds / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"pred/1\.png: cannot read image"):
        evaluate_folders(preds, masks)
    _save(preds / "1.png", _square_mask())
    _save(preds / "1.jpg", _square_mask())
    with pytest.raises(ValueError, match="several predictions"):
        evaluate_folders(preds, masks)
    with pytest.raises(ValueError, match="not a folder"):
        evaluate_folders(tmp_path / "absent", masks)


def test_evaluate_folders_skips_hidden_files(tmp_path):
    """macOS copies leave ``._<name>.png`` AppleDouble files beside each image: not masks, not predictions."""
    preds, masks = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir()
    masks.mkdir()
    gt = _square_mask()
    _save(masks / "1.png", gt)
    _save(preds / "1.png", gt)
    for folder in (masks, preds):
        (folder / "._1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
        _save(folder / ".2.png", gt)  # hidden: left out like hidden inputs of covseg infer
    r = evaluate_folders(preds, masks)
    assert r["n_images"] == 1 and [p["name"] for p in r["per_image"]] == ["1"]
    assert r["per_image"][0]["MAE"] == 0.0


def test_format_table_row():
    figs = {"meanDic": 0.6818, "meanSen": 0.6919, "meanSpe": 0.9427, "Sm": 0.7814, "meanEm": 0.8383,
            "MAE": 0.0822}
    head, row = format_table_row(figs, name="Inf-Net").splitlines()
    assert head.split() == ["model", "Dice", "Sen.", "Spec.", "S-alpha", "E-phi", "MAE"]
    assert row.split() == ["Inf-Net", "0.682", "0.692", "0.943", "0.781", "0.838", "0.082"]
    assert len(format_table_row(figs).splitlines()[0].split()) == 6


# ---------------------------------------------------------------- binary


def test_binary_perfect_and_inverted():
    gt = _square_mask() > 0
    s = binary_scores(gt.astype(np.float32), gt)
    assert (s["dice"], s["sensitivity"], s["specificity"], s["precision"], s["iou"], s["mae"]) == (
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (25, 0, 0, 75)
    s = binary_scores(~gt, gt)
    assert (s["dice"], s["sensitivity"], s["specificity"], s["iou"], s["mae"]) == (0.0, 0.0, 0.0, 0.0, 1.0)


def test_binary_probabilities_by_hand():
    s = binary_scores(np.array([0.2, 0.6, 0.5, 0.9]), np.array([0, 1, 0, 1]))
    # >= 0.5 -> [0, 1, 1, 1]: tp 2, fp 1, fn 0, tn 1
    assert s["dice"] == pytest.approx(4 / 5)
    assert s["sensitivity"] == 1.0
    assert s["specificity"] == 0.5
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["iou"] == pytest.approx(2 / 3)
    assert s["mae"] == pytest.approx((0.2 + 0.4 + 0.5 + 0.1) / 4)


def test_binary_empty_masks():
    empty = np.zeros((3, 4, 4), bool)
    some = empty.copy()
    some[1, 1, 1] = True
    s = binary_scores(empty, empty)
    assert s["dice"] == s["iou"] == s["precision"] == s["sensitivity"] == s["specificity"] == 1.0
    s = binary_scores(some, empty)  # false positive only
    assert (s["dice"], s["iou"], s["sensitivity"]) == (0.0, 0.0, 1.0)
    assert s["specificity"] == pytest.approx(47 / 48)
    s = binary_scores(empty, some)  # missed everything
    assert (s["dice"], s["sensitivity"], s["precision"]) == (0.0, 0.0, 1.0)


def test_binary_slabs_agree_with_direct_count(monkeypatch):
    rng = np.random.default_rng(0)
    pred = rng.random((7, 6, 5), dtype=np.float32)
    gt = rng.random((7, 6, 5)) < 0.4
    monkeypatch.setattr(binary, "_SLAB_VOXELS", 31)  # one slice per slab
    s = binary_scores(pred, gt)
    b = pred >= 0.5
    tp, fp, fn = np.sum(b & gt), np.sum(b & ~gt), np.sum(~b & gt)
    assert s["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert s["mae"] == pytest.approx(np.abs(pred - gt).mean(), rel=1e-6)


def test_binary_rejects_logits_and_shape_mismatch():
    with pytest.raises(ValueError, match="logits"):
        binary_scores(np.array([-1.0, 2.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        binary_scores(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- ignite handlers


def _batches():
    rng = np.random.default_rng(7)
    gt = (_square_mask(16, 3, 11) > 0).astype(np.float32)
    out = []
    for _ in range(3):
        p = np.clip(gt * 0.7 + rng.random((2, 16, 16)) * 0.4, 0, 1).astype(np.float32)
        out.append((torch.from_numpy(p[:, None]), torch.from_numpy(np.stack([gt, gt])[:, None])))
    return out


def test_handlers_agree_with_the_functions():
    data = _batches()
    engine = Engine(lambda e, batch: batch)
    ToolboxMetrics().attach(engine, "toolbox")
    PaperMetrics().attach(engine, "paper")
    ToolboxDice().attach(engine, "tb_dice")
    BinaryMetrics().attach(engine, "binary")
    m = engine.run(data).metrics

    acc = ToolboxAccumulator()
    bins = []
    for p, g in data:
        for i in range(p.shape[0]):
            acc.add(p[i, 0].numpy(), g[i, 0].numpy() > 0.5)
            bins.append(binary_scores(p[i, 0].numpy(), g[i, 0].numpy()))
    want = acc.figures()
    assert acc.n == 6
    assert set(m["paper"]) == {"meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE"}
    for k, v in m["paper"].items():
        assert v == pytest.approx(want[k]), k
    assert m["toolbox"]["maxEm"] == pytest.approx(want["maxEm"])
    assert m["tb_dice"] == pytest.approx(want["meanDic"])
    assert m["binary"]["dice"] == pytest.approx(np.mean([b["dice"] for b in bins]))


def test_handlers_refuse_logits_and_empty_epochs():
    metric = PaperMetrics()
    with pytest.raises(ValueError, match="probabilities"):
        metric.update((torch.full((1, 1, 4, 4), 3.0), torch.zeros(1, 1, 4, 4)))
    with pytest.raises(NotComputableError):
        metric.compute()
    with pytest.raises(NotComputableError):
        BinaryMetrics().compute()


def test_paired_difference_keeps_the_pairs():
    """A constant shift has a zero-width interval (the pairs are kept, not resampled apart); a noisy shift's interval
    holds its mean and excludes 0 only when the shift is large against the noise."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 0.9, 48)
    r = paired_difference(a, a + 0.02)
    assert r["difference"] == pytest.approx(0.02) and r["low"] == pytest.approx(0.02)
    assert r["high"] == pytest.approx(0.02) and r["share_b_higher"] == 1.0
    noisy = paired_difference(a, a + 0.02 + rng.normal(0, 0.01, 48))
    assert 0 < noisy["low"] < noisy["difference"] < noisy["high"]
    unclear = paired_difference(a, a + 0.002 + rng.normal(0, 0.05, 48))
    assert unclear["low"] < 0 < unclear["high"] and 0.05 < unclear["share_b_higher"] < 0.95
    with pytest.raises(ValueError, match="same length"):
        paired_difference([0.5, 0.6], [0.5])
