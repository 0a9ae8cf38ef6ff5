"""What covseg networks return in training mode, so trainers, losses and predictors test one type, not a model.

- :class:`DeepSupervisionOutput`: final logits plus side maps (deep supervision) and an optional edge map
  (Inf-Net, the JCS segmenter, any head with auxiliary outputs).
- :class:`ClassifierOutput`: class logits plus optional feature maps (for activation maps).

In eval mode every segmentation network returns its final logits tensor; :func:`final_logits` reads either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor


class DeepSupervisionOutput(NamedTuple):
    """Logits at input resolution: ``final`` (B, C, H, W), ``side`` maps (same C), optional ``edge`` (B, 1, H, W)."""

    final: Tensor
    side: Sequence[Tensor] = ()
    edge: Tensor | None = None


class ClassifierOutput(NamedTuple):
    """Class ``logits`` (B, K) and, optionally, the last feature maps (B, F, h, w) for activation maps."""

    logits: Tensor
    features: Tensor | None = None


def final_logits(output: object) -> Tensor:
    """The final logits of any network output: a tensor, a structured output, or a list whose last item is final."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, DeepSupervisionOutput):
        return output.final
    if isinstance(output, ClassifierOutput):
        return output.logits
    if isinstance(output, (list, tuple)) and output and isinstance(output[-1], Tensor):
        return output[-1]
    raise TypeError(f"network returned {type(output).__name__}, expected logits or a covseg output type")


def split_output(output: Tensor | DeepSupervisionOutput, count: int) -> tuple[object, object]:
    """A network output over a concatenated batch cut into its first ``count`` samples and the rest (every map of
    a :class:`DeepSupervisionOutput`, or the logits tensor)."""
    if isinstance(output, Tensor):
        return output[:count], output[count:]
    if isinstance(output, DeepSupervisionOutput):
        edge = output.edge
        return (DeepSupervisionOutput(output.final[:count], [s[:count] for s in output.side],
                                      None if edge is None else edge[:count]),
                DeepSupervisionOutput(output.final[count:], [s[count:] for s in output.side],
                                      None if edge is None else edge[count:]))
    raise TypeError(f"cannot split a {type(output).__name__} output by sample")
