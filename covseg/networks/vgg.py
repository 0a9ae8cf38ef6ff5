"""VGG16 encoder (Simonyan & Zisserman 2015, configuration D), with batch norm, written for covseg.

Five stages of 3x3 convolutions (2, 2, 3, 3, 3 convolutions; 64, 128, 256, 512, 512 channels at ``width`` 1).
Stage k (k = 1..5) starts with a 2x2 max-pool (except stage 1), so its output has stride 2**(k-1); the encoder
returns all five stage outputs *before* the next pooling. FCN8s pools them once more (pool3, pool4, pool5 at
strides 8, 16, 32); U-shaped decoders (the JCS segmenter) use them as they are. Trained from scratch in covseg:
no ImageNet weights are downloaded.
"""

from __future__ import annotations

from torch import Tensor, nn

VGG16_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convs)


def conv3x3_bn_relu(cin: int, cout: int, batch_norm: bool = True) -> list[nn.Module]:
    """One VGG layer: 3x3 convolution (+ batch norm) + ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class VGG16Encoder(nn.Module):
    """VGG16 convolutional stages; ``forward`` returns the five stage features (strides 1, 2, 4, 8, 16).

    ``width`` scales every stage's channels (0.5: a quarter of the FLOPs); ``batch_norm`` follows VGG16-BN, which
    trains from scratch far more reliably than plain VGG16.
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0, batch_norm: bool = True) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.stage_channels = tuple(max(8, int(round(c * width))) for c, _ in VGG16_STAGES)
        stages = []
        cin = in_channels
        for k, ((_, convs), cout) in enumerate(zip(VGG16_STAGES, self.stage_channels)):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2, ceil_mode=True)] if k > 0 else []
            for _ in range(convs):
                layers += conv3x3_bn_relu(cin, cout, batch_norm)
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        for m in self.modules():  # Xavier-uniform, as the Inf-Net paper initialises its multi-class heads
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
