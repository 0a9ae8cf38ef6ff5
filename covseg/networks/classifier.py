"""JCS slice classifier (Wu et al., Sec. III-A): Res2Net-50 encoder, global average pooling, a 2-way linear layer.

Class 1 is COVID-19, class 0 non-COVID. In eval mode the network returns its logits (B, 2), as MONAI's classifiers
do, so MONAI's bundle tools (``verify_net_in_out``, ``ckpt_export``) take it; in training mode a
:class:`~covseg.networks.outputs.ClassifierOutput` whose ``features`` are the last stage's maps (before pooling),
the ``X`` of the paper's activation maps (Eq. 1-2, :mod:`covseg.engines.inference.activation`), which reads them with
:meth:`SliceClassifier.forward_stages` (also the stage before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from covseg.networks.outputs import ClassifierOutput
from covseg.networks.res2net import Res2Net50

COVID = 1
"""Index of the COVID-19 class in the logits."""

_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


class SliceClassifier(nn.Module):
    """Res2Net-50 (v1b 26w x 4s) + GAP + dropout + linear; input (B, 1, H, W) grey in [0, 1]."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.2,
                 frozen_stages: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(0.5), persistent=False)  # same scaling as Inf-Net's encoder
        self.register_buffer("std", torch.tensor(0.25), persistent=False)
        self.backbone = Res2Net50(in_channels=in_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(Res2Net50.stage_channels[-1], num_classes)
        self.frozen_stages = 0
        self.freeze(frozen_stages)

    def freeze(self, stages: int) -> None:
        """Freeze the first ``stages`` of (stem, layer1, ..., layer4): no gradients, batch norm kept in eval mode."""
        if not 0 <= stages <= len(_STAGES):
            raise ValueError(f"frozen_stages must be in 0..{len(_STAGES)}, got {stages}")
        self.frozen_stages = stages
        for i, name in enumerate(_STAGES):
            for p in getattr(self.backbone, name).parameters():
                p.requires_grad_(i >= stages)

    def train(self, mode: bool = True) -> SliceClassifier:
        super().train(mode)
        for name in _STAGES[:self.frozen_stages]:
            getattr(self.backbone, name).eval()
        return self

    def forward_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the feature maps of the last two stages (strides 16 and 32)."""
        b = self.backbone
        x = b.layer2(b.layer1(b.stem((x - self.mean) / self.std)))
        x3 = b.layer3(x)
        x4 = b.layer4(x3)
        logits = self.fc(self.dropout(torch.flatten(x4.mean(dim=(2, 3)), 1)))
        return logits, [x3, x4]

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:
        """Logits in eval mode; logits and the last stage's maps in training mode."""
        logits, stages = self.forward_stages(x)
        return ClassifierOutput(logits=logits, features=stages[-1]) if self.training else logits


def covid_probability(output: ClassifierOutput | Tensor) -> Tensor:
    """P(COVID-19) per image from a classifier output (softmax over the classes)."""
    logits = output.logits if isinstance(output, ClassifierOutput) else output
    return torch.softmax(logits.float(), dim=1)[:, COVID]


def encoder_from_infnet(network: SliceClassifier, weights: str | Path,
                        prefix: str = "backbone.") -> SliceClassifier:
    """Initialise the classifier's Res2Net encoder from covseg's Inf-Net weights (``bundles/infnet/models/model.pt``).

    This is covseg's own pre-training (Inf-Net on COVID-SemiSeg); the linear layer stays freshly initialised.
    """
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    encoder = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
    if not encoder:
        raise ValueError(f"{weights}: no '{prefix}*' weights (is it an Inf-Net state dict?)")
    network.backbone.load_state_dict(encoder)
    return network


def slice_classifier(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.2, frozen_stages: int = 0,
                     init_weights: str | Path | None = None) -> SliceClassifier:
    """Registry factory: the JCS classifier, optionally with its encoder from Inf-Net weights."""
    net = SliceClassifier(in_channels, num_classes, dropout, frozen_stages)
    return encoder_from_infnet(net, init_weights) if init_weights else net


def trainable_parameters(network: nn.Module) -> Sequence[nn.Parameter]:
    """Parameters that receive gradients (frozen stages excluded)."""
    return [p for p in network.parameters() if p.requires_grad]
