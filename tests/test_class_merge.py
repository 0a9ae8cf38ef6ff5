"""Folding a class that covers too little of a slice into another (the multi-class bundle's consolidation rule)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from covseg.networks.multiclass import PriorGuidedSegmenter
from covseg.transforms.class_merge import merge_small_class


def _logits(consolidation_pixels: int, size: int = 50) -> torch.Tensor:
    """(1, 3, size, size) logits: background on the left half, GGO on the right, consolidation on the first
    ``consolidation_pixels`` pixels of the top row (GGO the runner-up there)."""
    logits = torch.zeros(1, 3, size, size)
    logits[0, 0, :, : size // 2] = 4.0
    logits[0, 1, :, size // 2:] = 3.0
    row = logits[0, 2, 0]
    row[:consolidation_pixels] = 5.0
    logits[0, 1, 0, :consolidation_pixels] = 2.0
    return logits


def test_a_few_consolidation_pixels_become_ggo_with_their_probability():
    logits = _logits(10)  # 10 of 2,500 pixels = 0.4 %
    merged = merge_small_class(logits, cls=2, into=1, min_fraction=0.005)
    assert not (merged.argmax(1) == 2).any()
    p, q = torch.softmax(logits, 1), torch.softmax(merged, 1)
    torch.testing.assert_close(q[:, 1], p[:, 1] + p[:, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(q[:, 0], p[:, 0], atol=1e-6, rtol=0)
    assert float(q[:, 2].max()) < 1e-15
    torch.testing.assert_close(merge_small_class(merged, 2, 1, 0.005), merged)  # a second pass changes nothing


def test_enough_consolidation_and_a_zero_fraction_leave_the_logits_alone():
    logits = _logits(20)  # 0.8 %
    assert torch.equal(merge_small_class(logits, 2, 1, 0.005), logits)
    assert torch.equal(merge_small_class(_logits(1), 2, 1, 0.0), _logits(1))


def test_each_slice_of_a_batch_is_judged_on_its_own():
    logits = torch.cat([_logits(10), _logits(20)])
    merged = merge_small_class(logits, 2, 1, 0.005)
    assert not (merged[0].argmax(0) == 2).any()
    assert torch.equal(merged[1], logits[1])


def test_merging_a_class_into_itself_or_a_missing_class_is_refused():
    with pytest.raises(ValueError, match="cannot merge class 2 into 2"):
        merge_small_class(_logits(1), 2, 2, 0.01)
    with pytest.raises(ValueError, match="cannot merge class 3 into 1"):
        merge_small_class(_logits(1), 3, 1, 0.01)


class _Prior(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1])


class _Head(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(10).expand(x.shape[0], -1, -1, -1)


def test_the_prior_guided_segmenter_applies_its_rule_only_when_asked():
    x = torch.zeros(2, 1, 50, 50)
    plain = PriorGuidedSegmenter(_Prior(), _Head())(x)
    ruled = PriorGuidedSegmenter(_Prior(), _Head(), merge_below=0.005)(x)
    assert int((plain.argmax(1) == 2).sum()) == 20
    assert int((ruled.argmax(1) == 2).sum()) == 0


def test_the_cross_validation_merge_scan_scores_the_rule():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiclass_cv import merge_scan

    logits = _logits(10)[0]
    no_consolidation = logits.argmax(0).clone()
    no_consolidation[no_consolidation == 2] = 1
    rows = merge_scan([(logits, no_consolidation)], [0.0, 0.005])
    assert rows[0] == "| merge_below | labelDice ggo | labelDice consolidation |"
    assert rows[2].endswith("| 0.000 |")  # 10 spurious consolidation pixels: Dice 0 on a slice without any
    assert rows[3].endswith("| 1.000 |")  # folded into GGO: nothing to get wrong


class _PositionHead(torch.nn.Module):
    """Not flip-equivariant: GGO logit grows from left to right, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([torch.zeros_like(ramp), ramp, torch.zeros_like(ramp)], dim=1)


def test_flip_averaging_the_chain_averages_its_four_flipped_passes():
    from covseg.networks.flips import flip_averaged

    x = torch.rand(2, 1, 8, 10)
    plain = PriorGuidedSegmenter(_Prior(), _PositionHead())(x)
    averaged = PriorGuidedSegmenter(_Prior(), _PositionHead(), flip_average=True)(x)
    assert float(plain[:, 1, :, -1].min()) == 1.0
    torch.testing.assert_close(averaged[:, 1], torch.full_like(averaged[:, 1], 0.5))  # the ramp and its mirror
    with pytest.raises(ValueError, match="at least one flip"):
        flip_averaged(lambda t: t, x, ())


@pytest.mark.parametrize(("setting", "averaged"), [("false", False), ("False", False), ("0", False), (False, False),
                                                  ("true", True), (True, True)])
def test_flip_average_as_a_bundle_override_is_read_as_the_flag_it_spells(setting, averaged):
    """``run evaluate … --flip_average false`` reaches the chain as the string 'false': ``bool('false')`` kept the
    four passes on (evaluate.yaml passes ``@flip_average`` as it came)."""
    x = torch.rand(1, 1, 8, 10)
    chain = PriorGuidedSegmenter(_Prior(), _PositionHead(), flip_average=setting)
    assert chain.flip_average is averaged
    plain = float(chain(x)[0, 1, 0, -1]) == 1.0  # one pass: the ramp's right end; four: its mean with the mirror
    assert plain is not averaged
    with pytest.raises(ValueError, match="flip_average"):
        PriorGuidedSegmenter(_Prior(), _PositionHead(), flip_average="sometimes")


def test_the_cross_validation_background_scan_widens_the_infection():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiclass_cv import bias_scan

    logits = _logits(0)[0]
    logits[1, :, 20:25] = 3.5  # a strip the head calls background by 0.5 over GGO
    truth = logits.argmax(0).clone()
    truth[:, 20:25] = 1  # ... that is GGO
    rows = bias_scan([(logits, truth)], [0.0, -1.0], cls=0)
    assert rows[0].startswith("| background logit bias (merge_below 0) | labelDice ggo |")
    before, after = (float(r.split("|")[2]) for r in rows[2:4])
    assert before < 0.95 and after == 1.0


def test_the_cross_validation_ensemble_averages_heads_of_the_same_slices():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiclass_cv import ensemble_pairs, ensemble_scan

    truth = _logits(0)[0].argmax(0)  # background left, GGO right
    right, wrong = _logits(0)[0], _logits(0)[0]
    wrong[0, :, 25:30] = 3.2  # one head calls part of the GGO background, narrowly
    confident = _logits(0)[0]
    confident[1, :, 25:30] = 6.0  # another is sure it is GGO: the average follows it
    rows = ensemble_scan({"a": [(wrong, truth)], "b": [(confident, truth)], "c": [(right, truth)]}, 0.0)
    assert rows[0].startswith("| heads averaged (merge_below 0) | labelDice ggo |")
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["a", "a + b", "a + b + c"]
    alone, together = (float(r.split("|")[2]) for r in rows[2:4])
    assert alone < 0.95 and together == 1.0
    averaged = ensemble_pairs([[(wrong, truth)], [(wrong, truth)]])[0][0]  # a head averaged with itself
    torch.testing.assert_close(averaged.argmax(0), wrong.argmax(0), rtol=0, atol=0)
    other = truth.clone()
    other[0, 0] = 2
    with pytest.raises(SystemExit, match="same --split_seed"):
        ensemble_pairs([[(right, truth)], [(right, other)]])
