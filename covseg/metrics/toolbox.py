"""The Inf-Net authors' evaluation-toolbox metrics (Fan et al., IEEE TMI 2020), reproduced exactly.

Conventions (those of the authors' MATLAB ``EvaluationTool/main.m`` and ``Fmeasure_calu.m``):

* ground truth: ``gt > 128`` on an 8-bit mask (:func:`binarize_gt`);
* prediction: ``im2double`` then ``mapminmax`` to [0, 1] (:func:`normalize_map`);
* Dice, Sen., Spec., Prec., IoU at each of the 256 thresholds ``1:-1/255:0`` (the exact doubles MATLAB's colon
  operator makes, :data:`THRESHOLDS`), binarising ``map >= t``; when a threshold gives no true positive, *all*
  of that threshold's scores are 0 (including specificity, and whatever the mask: the toolbox's rule);
* E-phi on ``map > t`` (strict, as ``main.m`` binarises for ``Enhancedmeasure``);
* "mean" figures: average over thresholds, then over images; "max" figures: the maximum over thresholds of the
  image-averaged curve (not the mean of per-image maxima);
* "adaptive" figures: threshold ``min(2 * mean(map), 1)`` (SOD toolbox), Dice/Sen/Spec/Prec/IoU on ``>=``,
  E-phi on ``>``; S-alpha with alpha = 0.5; MAE of the normalised map.

Why not pysodmetrics throughout: its threshold sweep quantises ``map * 255`` to uint8 (floor) instead of
comparing with the toolbox's float thresholds, uses ``>=`` for E-phi, and keeps specificity when a threshold
has no true positive. On the authors' 0-255 maps that moves the figures by only ~0.0003, but on a slice with
an empty mask pysodmetrics' specificity is ~1 where the toolbox's is 0, so the sweep (and E-phi, from the same
counts) is written here. S-alpha and MAE come from pysodmetrics, which follows the MATLAB code for them.

``adpIoU`` of a set of images is ``adpDice / (2 - adpDice)`` (the Jaccard index equivalent to the set's
adaptive Dice): that is what the reference figures report (0.571 on the authors' Inf-Net maps, where the mean
of per-image adaptive IoU is 0.587, also returned, as ``adpIoUPerImage``).
"""

from __future__ import annotations

import numpy as np
import py_sod_metrics

EPS = float(np.spacing(1))  # MATLAB's eps


def _matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """``a:d:b`` as MATLAB computes it: first half ``a + k*d``, second half ``b - k*d``, mid ``(a+b)/2``."""
    n = round((b - a) / d)
    out = np.empty(n + 1)
    half = n // 2
    k = np.arange(half + 1)
    out[k] = a + k * d
    out[n - k] = b - k * d
    if n % 2 == 0:
        out[half] = (a + b) / 2
    return out


THRESHOLDS = _matlab_colon(1.0, -1.0 / 255.0, 0.0)
"""The toolbox's 256 thresholds ``1:-1/255:0`` (some differ from ``(255 - k) / 255`` by one ulp, which
matters: 0-255 maps have pixels exactly on the thresholds)."""

CURVES = ("Dic", "Sen", "Spe", "Pre", "IoU", "Em")
"""Per-threshold curves; the figures are ``mean<curve>`` and ``max<curve>``."""

ADAPTIVE = ("adpDice", "adpSen", "adpSpe", "adpPre", "adpIoU", "adpEm")
IMAGE_KEYS = tuple(f"mean{c}" for c in CURVES) + ADAPTIVE + ("Sm", "MAE")
"""Keys of :func:`score_map`'s per-image dict."""

_S_MEASURE = py_sod_metrics.Smeasure(alpha=0.5)
_MAE = py_sod_metrics.MAE()


def normalize_map(pred: np.ndarray) -> np.ndarray:
    """``mapminmax(im2double(pred), 0, 1)`` as float64: uint8 / 255, uint16 / 65535, bool and floats as they
    are, then min-max to [0, 1]; a constant map is left unchanged (as ``mapminmax`` does)."""
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"prediction must be a 2D map, got shape {pred.shape}")
    if pred.dtype == np.uint8:
        x = pred / 255.0
    elif pred.dtype == np.uint16:
        x = pred / 65535.0
    elif pred.dtype == bool or np.issubdtype(pred.dtype, np.floating):
        x = pred.astype(np.float64)
    else:
        raise ValueError(f"prediction dtype {pred.dtype} not supported (uint8, uint16, bool or float)")
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("prediction contains NaN or infinite values")
    if hi > lo:
        x = (x - lo) * (1.0 / (hi - lo))  # mapminmax: (x - xmin) .* gain + ymin
    return x


def binarize_gt(gt: np.ndarray) -> np.ndarray:
    """Ground truth as bool: bool as is, uint8/uint16 ``> 128`` (the toolbox), float ``> 0.5``.

    A uint8/uint16 mask whose maximum is 1 is refused (it would be empty under ``> 128``): pass it as bool.
    """
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"ground truth must be a 2D mask, got shape {gt.shape}")
    if gt.dtype == bool:
        return gt
    if gt.dtype in (np.uint8, np.uint16):
        if gt.max() == 1:
            raise ValueError("ground truth looks like a 0/1 label map; the toolbox reads 0-255 masks as "
                             "gt > 128, so pass gt.astype(bool)")
        return gt > 128
    if np.issubdtype(gt.dtype, np.floating):
        return gt > 0.5
    raise ValueError(f"ground truth dtype {gt.dtype} not supported (bool, uint8, uint16 or float)")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _fmeasure_calu(tp: np.ndarray, fp: np.ndarray, n_fg: int, n: int) -> dict[str, np.ndarray]:
    """Dice/Sen/Spe/Pre/IoU from counts at ``>= t``; all zero where ``tp == 0`` (the toolbox's rule)."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = n_fg - tp
    tn = (n - n_fg) - fp
    some = tp > 0
    return {
        "Dic": np.where(some, _ratio(2 * tp, n_fg + tp + fp), 0.0),
        "Sen": np.where(some, _ratio(tp, n_fg), 0.0),
        "Spe": np.where(some, _ratio(tn, tn + fp), 0.0),
        "Pre": np.where(some, _ratio(tp, tp + fp), 0.0),
        "IoU": np.where(some, _ratio(tp, tp + fp + fn), 0.0),
    }


def _emeasure(tp: np.ndarray, fp: np.ndarray, n_fg: int, n: int) -> np.ndarray:
    """E-phi (Fan et al., IJCAI 2018) of binary maps given by their counts, exactly as ``Enhancedmeasure.m``.

    Every pixel of one (prediction, gt) class pair has the same alignment value, so the enhanced-alignment sum
    is four terms; the result equals the pixel-wise formula.
    """
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    n_pred = tp + fp
    if n_fg == 0:  # enhanced matrix = 1 - FM
        total = n - n_pred
    elif n_fg == n:  # enhanced matrix = FM
        total = n_pred
    else:
        mu_p, mu_g = n_pred / n, n_fg / n
        fn = n_fg - tp
        tn = n - n_fg - fp
        total = np.zeros_like(tp)
        for count, dp, dg in ((tp, 1 - mu_p, 1 - mu_g), (fp, 1 - mu_p, -mu_g),
                              (fn, -mu_p, 1 - mu_g), (tn, -mu_p, -mu_g)):
            align = 2 * dp * dg / (dp * dp + dg * dg + EPS)
            total = total + count * (align + 1) ** 2 / 4
    return total / (n - 1 + EPS)


def adaptive_threshold(pred_n: np.ndarray) -> float:
    """Twice the mean of the normalised map, capped at 1 (SOD toolbox)."""
    return min(2.0 * float(pred_n.mean()), 1.0)


def score_with_curves(pred: np.ndarray, gt: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """:func:`score_map`'s scores and the per-threshold curves, shape (len(CURVES), 256)."""
    pred_n = normalize_map(pred)
    gt_b = binarize_gt(gt)
    if pred_n.shape != gt_b.shape:
        raise ValueError(f"prediction shape {pred_n.shape} differs from ground truth shape {gt_b.shape}")
    n, n_fg = gt_b.size, int(np.count_nonzero(gt_b))
    fg = np.sort(pred_n[gt_b])
    bg = np.sort(pred_n[~gt_b])
    # pixels >= t (Fmeasure_calu) and > t (E-phi), counted from the sorted values
    tp_ge = fg.size - np.searchsorted(fg, THRESHOLDS, side="left")
    fp_ge = bg.size - np.searchsorted(bg, THRESHOLDS, side="left")
    tp_gt = fg.size - np.searchsorted(fg, THRESHOLDS, side="right")
    fp_gt = bg.size - np.searchsorted(bg, THRESHOLDS, side="right")
    curves = _fmeasure_calu(tp_ge, fp_ge, n_fg, n)
    curves["Em"] = _emeasure(tp_gt, fp_gt, n_fg, n)
    curve_arr = np.stack([curves[c] for c in CURVES])

    t = adaptive_threshold(pred_n)
    tp_a = fg.size - np.searchsorted(fg, t, side="left")
    fp_a = bg.size - np.searchsorted(bg, t, side="left")
    adp = _fmeasure_calu(tp_a, fp_a, n_fg, n)
    scores = {f"mean{c}": float(curve_arr[i].mean()) for i, c in enumerate(CURVES)}
    scores.update({
        "adpDice": float(adp["Dic"]), "adpSen": float(adp["Sen"]), "adpSpe": float(adp["Spe"]),
        "adpPre": float(adp["Pre"]), "adpIoU": float(adp["IoU"]),
        "adpEm": float(_emeasure(fg.size - np.searchsorted(fg, t, side="right"),
                                 bg.size - np.searchsorted(bg, t, side="right"), n_fg, n)),
        "Sm": float(_S_MEASURE.cal_sm(pred_n, gt_b)),
        "MAE": float(_MAE.cal_mae(pred_n, gt_b)),
    })
    return scores, curve_arr


def score_map(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Toolbox scores of one prediction map against its mask (same shape), keys :data:`IMAGE_KEYS`.

    ``pred``: 0-255 uint8 map or float array (min-max normalised here); ``gt``: 0-255 mask (``> 128``) or
    bool. ``adpIoU`` here is this image's IoU at the adaptive threshold (the set's figure differs, see the
    module docstring).
    """
    return score_with_curves(pred, gt)[0]


def figures_from_sums(curve_sum: np.ndarray, score_sum: dict[str, float], n_images: int) -> dict[str, float]:
    """The set's figures from sums over images of the curves and of :func:`score_map`'s scores."""
    if n_images <= 0:
        raise ValueError("no images were scored")
    mean_curves = np.asarray(curve_sum, dtype=np.float64) / n_images
    figs = {k: float(score_sum[k]) / n_images for k in IMAGE_KEYS}
    for i, c in enumerate(CURVES):
        figs[f"max{c}"] = float(mean_curves[i].max())
    figs["adpIoUPerImage"] = figs["adpIoU"]
    figs["adpIoU"] = figs["adpDice"] / (2.0 - figs["adpDice"])
    return figs


class ToolboxAccumulator:
    """Running sums of toolbox scores over images; :meth:`figures` gives the set's figures."""

    def __init__(self, keep_per_image: bool = True) -> None:
        self.keep_per_image = keep_per_image
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.curve_sum = np.zeros((len(CURVES), THRESHOLDS.size))
        self.score_sum = dict.fromkeys(IMAGE_KEYS, 0.0)
        self.per_image: list[dict] = []

    def add(self, pred: np.ndarray, gt: np.ndarray, name: str | None = None) -> dict[str, float]:
        """Score one map (see :func:`score_map`), add it to the sums and return its scores."""
        scores, curves = score_with_curves(pred, gt)
        self.n += 1
        self.curve_sum += curves
        for k in IMAGE_KEYS:
            self.score_sum[k] += scores[k]
        if self.keep_per_image:
            self.per_image.append({"name": name if name is not None else str(self.n - 1), **scores})
        return scores

    def figures(self) -> dict[str, float]:
        return figures_from_sums(self.curve_sum, self.score_sum, self.n)
