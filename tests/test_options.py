"""On/off options from bundle overrides: ``--flag false`` arrives as the string 'false' and must mean off."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from monai.transforms import RandScaleIntensityd

from covseg.options import as_flag

TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "infnet" / "configs" / "train.yaml"


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("false", False), ("False", False), ("true", True), ("TRUE", True),
    ("0", False), ("1", True), ("no", False), ("on", True), (0, False), (1, True), (None, False),
])
def test_as_flag_reads_the_usual_spellings(value, expected):
    assert as_flag(value) is expected


def test_as_flag_names_the_option_on_a_bad_value():
    with pytest.raises(ValueError, match="strong_window_jitter: expected true or false, got 'maybe'"):
        as_flag("maybe", "strong_window_jitter")


@pytest.mark.parametrize(("override", "prob"), [("false", 0.3), (False, 0.3), ("true", 0.8), (True, 0.8)])
def test_train_bundle_window_jitter_override_is_honoured(override, prob):
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser["strong_window_jitter"] = override
    parser["image_size"] = 64
    transform = parser.get_parsed_content("train#dataset#transform")
    scales = [t for t in transform.transforms if isinstance(t, RandScaleIntensityd)]
    assert [t.prob for t in scales] == [prob]  # strong jitter: p 0.8; the mild jitter of stage 1: p 0.3


@pytest.mark.parametrize(("setting", "expected"), [("false", False), (False, False), ("False", False), (0, False)])
def test_bf16_setting_off_in_any_spelling(setting, expected):
    from covseg.engines.runtime.cpu import resolve_bf16

    assert resolve_bf16(setting) is expected


def test_bf16_auto_follows_the_hardware_and_bad_values_are_named():
    from covseg.engines.runtime.cpu import bf16_fast, resolve_bf16

    assert resolve_bf16("auto") is bf16_fast("cpu")
    assert resolve_bf16("AUTO") is bf16_fast("cpu")
    with pytest.raises(ValueError, match="bf16: expected true or false, got 'fast'"):
        resolve_bf16("fast")
