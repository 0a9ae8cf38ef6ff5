"""Option values as they arrive from bundle and command-line overrides.

``python -m monai.bundle run … --flag false`` passes the *string* ``'false'`` (only ``False`` becomes a bool),
and ``bool('false')`` is True; so every on/off option goes through :func:`as_flag`.
"""

from __future__ import annotations

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", "null", ""}


def as_flag(value: object, name: str = "option") -> bool:
    """``value`` as a bool: bools and numbers as they are; ``'true'/'false'``, ``'yes'/'no'``, ``'on'/'off'``,
    ``'1'/'0'`` in any case; ``None`` is False. Anything else raises ``ValueError`` naming the option."""
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def fraction_problem(flag_style: bool = False, **values: float | None) -> str | None:
    """Why one of ``values`` (probabilities, fractions) is not within [0, 1], as one line, else ``None``: 50 meant
    as 50 % would silently decide every case one way. ``flag_style`` names them as command-line options
    (``--slice-threshold``)."""
    for name, value in values.items():
        if value is not None and not 0.0 <= value <= 1.0:
            shown = f"--{name.replace('_', '-')}" if flag_style else name
            return f"{shown} must be within [0, 1], got {value}"
    return None
