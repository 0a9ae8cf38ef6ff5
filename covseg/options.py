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
