"""Two runs of one seeded training agree, although MONAI's random transforms seed themselves from the OS.

``build_trainer`` reseeds Python, NumPy, torch and the loader's transforms as each epoch starts
(:func:`covseg.engines.training.seeding.reseed_each_epoch`), so a documented training command gives one answer.
"""

from __future__ import annotations

import torch
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.training.trainer import build_trainer


def _items() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        image = torch.rand(1, 32, 32, generator=g)
        image[:, :, :12] = 0  # not flip-symmetric: a flip changes what the network sees
        items.append({"image": image, "label": (image > 0.5).float()})
    return items


def _train(out, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)  # same initial weights for every run: only the training draws may differ
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    transform = Compose([RandFlipd(["image", "label"], prob=0.5, spatial_axis=1),
                         RandGaussianNoised("image", prob=1.0, std=0.2)])
    loader = DataLoader(Dataset(_items(), transform), batch_size=2, shuffle=True)
    trainer = build_trainer(net, loader, out, max_epochs=3, lr=1e-2, image_size=32, scales=(1.0,),
                            loss_fn=nn.BCEWithLogitsLoss(), tensorboard=False, progress=False, seed=seed)
    trainer.run(loader, max_epochs=3)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, b = _train(tmp_path / "a", seed=0), _train(tmp_path / "b", seed=0)
    c = _train(tmp_path / "c", seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a), "two runs with one seed trained different weights"
    assert any(not torch.equal(a[k], c[k]) for k in a), "the seed does not reach the training draws"
