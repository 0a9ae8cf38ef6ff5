"""Fast synthetic tests of covseg.transforms: window, lung mask, crop/paste, edges, dict transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from utils import dice

from covseg.transforms.crop import DEFAULT_MARGIN_PX, crop_to_box, lung_box, margin_px, paste_from_box
from covseg.transforms.crop_transforms import CropToLungBox, CropToLungBoxd, PasteFromLungBox, PasteFromLungBoxd
from covseg.transforms.edges import EdgeMap, EdgeMapd, edge_map
from covseg.transforms.intensity import SEMISEG_WINDOW, window_hu
from covseg.transforms.intensity_transforms import WindowHU, WindowHUd
from covseg.transforms.lung import LEFT_LUNG, RIGHT_LUNG, LungMask, LungMaskd, lung_mask
from covseg.transforms.window_fit import TISSUE_HU, fit_landmarks, fit_window, grey_landmarks


def synthetic_chest(
    nz: int = 40,
    ny: int = 128,
    nx: int = 128,
    *,
    trachea: bool = False,
    join: bool = False,
    bowel_gas: bool = False,
    lesion: bool = False,
    pad_fov: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """An LPS [z, y, x] HU chest: body (fat rim, soft tissue), right lung at low x, left lung at high x.

    Returns (hu float32, truth uint8 with 1 right / 2 left lung, lesions included, airways excluded).
    """
    z, y, x = np.ogrid[:nz, :ny, :nx]
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.36 * ny)) ** 2 <= 1
    inner = ((x - nx / 2) / (0.41 * nx)) ** 2 + ((y - ny / 2) / (0.32 * ny)) ** 2 <= 1
    hu[np.broadcast_to(body, hu.shape)] = -100.0
    hu[np.broadcast_to(inner, hu.shape)] = 40.0
    zc, zr = (nz - 1) / 2, max(0.45 * nz, 2.0)
    right = ((x - 0.31 * nx) / (0.13 * nx)) ** 2 + ((y - ny / 2) / (0.24 * ny)) ** 2 + ((z - zc) / zr) ** 2 <= 1
    left = ((x - 0.69 * nx) / (0.12 * nx)) ** 2 + ((y - ny / 2) / (0.24 * ny)) ** 2 + ((z - zc) / zr) ** 2 <= 1
    truth = np.zeros(hu.shape, np.uint8)
    truth[right] = RIGHT_LUNG
    truth[left] = LEFT_LUNG
    rng = np.random.default_rng(seed)
    hu[truth > 0] = -850.0 + rng.normal(0, 20, int((truth > 0).sum()))
    if join:  # the lungs touch across the anterior midline
        bridge = (np.abs(x - nx / 2) <= 0.2 * nx) & (np.abs(y - 0.36 * ny) <= 1) & (np.abs(z - zc) <= 0.3 * nz)
        hu[bridge] = -850.0
    if lesion:  # dense consolidation well inside the right lung
        blob = ((x - 0.31 * nx) ** 2 + (y - ny / 2) ** 2 + (z - zc) ** 2) <= (0.05 * nx) ** 2
        hu[blob] = 20.0
    if trachea:  # a tube from the top slice down the midline, branching into both lungs
        tube = ((x - nx / 2) ** 2 + (y - 0.42 * ny) ** 2 <= (0.035 * nx) ** 2) & (z >= int(0.55 * nz))
        hu[np.broadcast_to(tube, hu.shape)] = -1000.0
        for cx in (0.31, 0.69):
            zz = int(0.55 * nz)
            xs = np.linspace(nx / 2, cx * nx, 40)
            for xi in xs:
                sel = (x - xi) ** 2 + (y - 0.42 * ny) ** 2 <= (0.025 * nx) ** 2
                hu[zz - 1 : zz + 1][np.broadcast_to(sel, (2, ny, nx))] = -1000.0
    if bowel_gas:  # anterior gas below the lungs
        gas = ((x - 0.5 * nx) ** 2 + (y - 0.25 * ny) ** 2 <= (0.05 * nx) ** 2) & (z < 3)
        hu[np.broadcast_to(gas, hu.shape)] = -1000.0
    if pad_fov:  # outside the circular field of view
        fov = (x - nx / 2) ** 2 + (y - ny / 2) ** 2 > (0.49 * nx) ** 2
        hu[np.broadcast_to(fov, hu.shape)] = -2048.0
    return hu, truth


# ---------------------------------------------------------------------------------------------------
# intensity


def test_window_hu_known_values() -> None:
    out = window_hu(np.array([-2000, -1000, -500, 0, 500, 3000]), level=-500, width=1000)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32
    lo, hi = SEMISEG_WINDOW[0] - SEMISEG_WINDOW[1] / 2, SEMISEG_WINDOW[0] + SEMISEG_WINDOW[1] / 2
    d = window_hu(np.array([lo, SEMISEG_WINDOW[0], hi, -1000.0, -100.0, 40.0]))
    np.testing.assert_allclose(d[:3], [0.0, 0.5, 1.0], atol=1e-6)
    # the default window gives the COVID-SemiSeg look: air dark but not clipped, soft tissue bright
    assert 0.03 < d[3] < 0.12 and 0.70 < d[4] < 0.80 and 0.80 < d[5] < 0.90
    assert window_hu(torch.tensor([[-430.0]])).shape == (1, 1)
    with pytest.raises(ValueError):
        window_hu(np.zeros(3), 0, 0)


def test_window_transforms_and_fit_roundtrip() -> None:
    hu = np.linspace(-1200, 400, 50, dtype=np.float32).reshape(5, 10)
    np.testing.assert_array_equal(WindowHU()(hu), window_hu(hu))
    d = WindowHUd(keys=["image"], level=-600, width=1500)({"image": hu, "other": 1})
    np.testing.assert_array_equal(d["image"], window_hu(hu, -600, 1500))
    assert d["other"] == 1
    grey = [255 * float(window_hu(np.array(h), -430, 1350)) for h in TISSUE_HU.values()]
    level, width = fit_window(list(TISSUE_HU.values()), grey)
    assert level == pytest.approx(-430, abs=1e-3) and width == pytest.approx(1350, abs=1e-3)
    with pytest.raises(ValueError):
        fit_window([0.0], [1.0])


def test_grey_landmarks_recover_a_known_window() -> None:
    hu, truth = synthetic_chest(nz=1, ny=256, nx=256)
    sl = hu[0].copy()
    yy, xx = np.mgrid[:256, :256]
    sl[(xx - 128) ** 2 + (yy - 110) ** 2 <= 64] = -1000.0  # trachea
    sl[(xx - 128) ** 2 + (yy - 150) ** 2 <= 300] = -100.0  # mediastinal fat
    box = lung_box(truth[0], 3)
    assert box is not None
    for level, width in [(-430, 1350), (-600, 1500), (330, 2770)]:
        img = np.round(255 * window_hu(crop_to_box(sl, box), level, width)).astype(np.uint8)
        marks = grey_landmarks(img)
        assert marks["air"] is not None and marks["soft"] is not None and marks["fat"] is not None
        est = fit_landmarks([marks])
        assert est is not None
        assert est[0] == pytest.approx(level, abs=25) and est[1] == pytest.approx(width, rel=0.05)


# ---------------------------------------------------------------------------------------------------
# lung mask


def test_lung_mask_labels_sides_and_shape() -> None:
    hu, truth = synthetic_chest()
    m = lung_mask(hu, (2.5, 2.5, 2.5))
    assert m.dtype == np.uint8 and m.shape == hu.shape
    assert set(np.unique(m)) == {0, 1, 2}
    assert dice(m == RIGHT_LUNG, truth == RIGHT_LUNG) > 0.97
    assert dice(m == LEFT_LUNG, truth == LEFT_LUNG) > 0.97
    # right lung = patient right = image left = low x
    assert np.nonzero(m == RIGHT_LUNG)[2].mean() < np.nonzero(m == LEFT_LUNG)[2].mean()


def test_lung_mask_removes_trachea_and_bowel_gas_and_handles_fov_padding() -> None:
    hu, truth = synthetic_chest(trachea=True, bowel_gas=True, pad_fov=True)
    m = lung_mask(hu, (2.5, 2.5, 2.5))
    assert dice(m > 0, truth > 0) > 0.95
    top = hu.shape[0] - 1  # trachea only, above the lungs
    assert not m[top].any()
    yy, xx = np.mgrid[: hu.shape[1], : hu.shape[2]]
    gas = (hu[:3] == -1000.0) & ((yy - 32) ** 2 + (xx - 64) ** 2 < 40)
    assert gas.sum() > 50 and not m[:3][gas].any()  # anterior bowel gas is not lung
    assert dice(m == RIGHT_LUNG, truth == RIGHT_LUNG) > 0.95


def test_lung_mask_splits_touching_lungs() -> None:
    hu, truth = synthetic_chest(join=True)
    m = lung_mask(hu, (2.5, 2.5, 2.5))
    assert dice(m == RIGHT_LUNG, truth == RIGHT_LUNG) > 0.95
    assert dice(m == LEFT_LUNG, truth == LEFT_LUNG) > 0.95


def test_lung_mask_includes_dense_lesions_inside_the_lung() -> None:
    hu, truth = synthetic_chest(lesion=True)
    m = lung_mask(hu, (2.5, 2.5, 2.5))
    blob = hu > 0
    blob &= truth > 0
    assert blob.sum() > 50
    assert (m[blob] == RIGHT_LUNG).mean() > 0.95


def test_lung_mask_pulls_in_consolidation_at_the_chest_wall_not_the_mediastinum() -> None:
    hu, truth = synthetic_chest(nz=40, ny=128, nx=128)
    z, y, x = np.ogrid[:40, :128, :128]
    # a 30 mm wide consolidation replacing the lateral edge of the right lung
    lateral = ((x - 27.3) ** 2 + (y - 64) ** 2 <= 6**2) & (np.abs(z - 19.5) <= 6) & (truth == RIGHT_LUNG)
    hu[lateral] = 30.0
    m = lung_mask(hu, (2.5, 2.5, 2.5))
    assert lateral.sum() > 1000
    # measured 0.84 (the rim beyond the lung's convex outline is lost); 0.0 with the 8 mm closing only
    assert (m[lateral] == RIGHT_LUNG).mean() > 0.75
    assert (lung_mask(hu, (2.5, 2.5, 2.5), wide_closing_mm=8.0)[lateral] > 0).mean() < 0.2
    # the mediastinum between the lungs stays out
    assert not m[:, :, 60:68].any()


@pytest.mark.parametrize(
    "arr",
    [
        np.full((6, 64, 64), -1000.0),  # air only
        np.zeros((6, 64, 64)),  # water only
        np.full((4, 32, 32), -2048.0),  # all outside the field of view
        np.random.default_rng(0).normal(-400, 500, (8, 48, 48)),  # noise
        np.zeros((1, 16, 16)),
        np.full((2, 5, 5), -900.0),
        np.zeros((0, 8, 8)),
    ],
)
def test_lung_mask_without_lungs_is_all_zero(arr: np.ndarray) -> None:
    m = lung_mask(arr, (1.0, 1.0, 1.0))
    assert m.shape == arr.shape and m.dtype == np.uint8 and not m.any()


def test_lung_mask_tiny_2d_int16_and_large_volume_paths() -> None:
    hu, truth = synthetic_chest(nz=2, ny=256, nx=256)
    m2 = lung_mask(hu.astype(np.int16), (0.7, 0.7, 1.0))
    assert dice(m2 == RIGHT_LUNG, truth == RIGHT_LUNG) > 0.95 and dice(m2 == LEFT_LUNG, truth == LEFT_LUNG) > 0.95
    single = lung_mask(hu[0], (0.7, 0.7, 1.0))
    assert single.shape == hu.shape[1:] and set(np.unique(single)) == {0, 1, 2}
    # > 4 M voxels: analysed on a coarser working grid and refined at full resolution
    big, big_truth = synthetic_chest(nz=70, ny=256, nx=256)
    mb = lung_mask(big, (0.7, 0.7, 1.0))
    assert dice(mb == RIGHT_LUNG, big_truth == RIGHT_LUNG) > 0.97
    assert dice(mb == LEFT_LUNG, big_truth == LEFT_LUNG) > 0.97


def test_lung_mask_transforms() -> None:
    hu, truth = synthetic_chest()
    ref = lung_mask(hu, (2.5, 2.5, 2.5))
    out = LungMask((2.5, 2.5, 2.5))(torch.from_numpy(hu)[None])
    assert out.shape == (1, *hu.shape)
    np.testing.assert_array_equal(out[0], ref)
    d = LungMaskd(keys="image", mask_key="lung")({"image": hu, "spacing": (2.5, 2.5, 2.5)})
    np.testing.assert_array_equal(d["lung"], ref)
    with pytest.raises(ValueError):
        LungMask()(np.zeros((2, 3, 8, 8)))


def test_lung_mask_on_the_shared_phantom() -> None:
    from covseg.synthetic import phantom
    ph = phantom.make_chest_phantom((40, 128, 128), (2.8, 2.8, 7.5), seed=1)
    m = lung_mask(ph.hu, ph.spacing)
    assert dice(m == RIGHT_LUNG, ph.lung_labels == 1) > 0.97
    assert dice(m == LEFT_LUNG, ph.lung_labels == 2) > 0.97


# ---------------------------------------------------------------------------------------------------
# crop / paste


def test_lung_box_margins_and_empty() -> None:
    m = np.zeros((20, 30), np.uint8)
    m[5:8, 10:12] = 1
    m[12, 20] = 2
    assert lung_box(m, 0) == (5, 13, 10, 21)
    assert lung_box(m, 3) == (2, 16, 7, 24)
    assert lung_box(m, 100) == (0, 20, 0, 30)
    assert lung_box(np.zeros((20, 30)), 5) is None
    assert lung_box(m[None], 0) == (5, 13, 10, 21)  # channel-first
    assert lung_box(torch.from_numpy(m), 0) == (5, 13, 10, 21)
    assert lung_box(m) == lung_box(m, DEFAULT_MARGIN_PX)
    assert margin_px((0.7, 0.7, 1.0)) == 5 and margin_px((4.0, 4.0, 4.0)) == 1
    with pytest.raises(ValueError):
        lung_box(np.zeros(5))


@pytest.mark.parametrize("shape", [(40, 50), (3, 40, 50), (2, 1, 40, 50)])
def test_crop_paste_is_the_exact_inverse(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    box = (7, 31, 3, 49)
    patch = crop_to_box(x, box)
    assert patch.shape == (*shape[:-2], 24, 46)
    back = paste_from_box(patch, box, shape[-2:], fill=-5)
    assert back.shape == x.shape and back.dtype == x.dtype
    np.testing.assert_array_equal(back[..., 7:31, 3:49], x[..., 7:31, 3:49])
    outside = np.ones(shape[-2:], bool)
    outside[7:31, 3:49] = False
    assert (back[..., outside] == -5).all()
    t = torch.from_numpy(x)
    tb = paste_from_box(crop_to_box(t, box), box, t.shape)
    assert isinstance(tb, torch.Tensor)
    np.testing.assert_array_equal(tb.numpy()[..., 7:31, 3:49], x[..., 7:31, 3:49])
    patch[..., 0, 0] = 99  # crop is a copy
    assert x[..., 7, 3].max() != 99


def test_crop_paste_errors() -> None:
    x = np.zeros((10, 10))
    with pytest.raises(ValueError):
        crop_to_box(x, (5, 5, 0, 3))
    with pytest.raises(ValueError):
        paste_from_box(np.zeros((3, 3)), (0, 4, 0, 3), (10, 10))
    with pytest.raises(ValueError):
        paste_from_box(np.zeros((3, 3)), (8, 11, 0, 3), (10, 10))


def test_crop_array_transforms() -> None:
    img = np.arange(100.0).reshape(10, 10)
    mask = np.zeros((10, 10))
    mask[4:6, 4:6] = 1
    crop = CropToLungBox(margin_px=1)
    box = crop.compute_box(mask)
    assert box == (3, 7, 3, 7)
    patch = crop(img, mask)
    np.testing.assert_array_equal(PasteFromLungBox(fill=0)(patch, box, img.shape)[3:7, 3:7], img[3:7, 3:7])
    assert crop(img, np.zeros((10, 10))) is img
    assert not PasteFromLungBox()(img, None, (10, 10)).any()


def test_dict_transforms_in_compose_roundtrip() -> None:
    hu, truth = synthetic_chest(nz=1, ny=96, nx=96)
    infection = np.zeros((1, 96, 96), np.float32)
    infection[0, 40:50, 25:35] = 1.0
    data = {"image": hu[0][None], "lung": truth[0][None], "label": infection}
    pre = Compose(
        [
            WindowHUd(keys="image"),
            CropToLungBoxd(keys=["image", "label", "lung"], mask_key="lung", margin_px=4),
            EdgeMapd(keys="label", edge_key="edge"),
        ]
    )
    out = pre(data)
    box = out["lung_box"]["box"]
    assert out["lung_box"]["spatial_shape"] == (96, 96)
    assert out["image"].shape == (1, box[1] - box[0], box[3] - box[2])
    assert out["edge"].shape == out["label"].shape and out["edge"].sum() > 0
    assert out["image_meta_dict"]["lung_box"] == box
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    post = Compose([PasteFromLungBoxd(keys=["label", "image"], fill=0)])
    back = post(out)
    np.testing.assert_array_equal(back["label"], infection)
    y0, y1, x0, x1 = box
    np.testing.assert_allclose(back["image"][..., y0:y1, x0:x1], window_hu(hu[0][None])[..., y0:y1, x0:x1])
    # a slice without lung: nothing cropped, pasting back gives an empty prediction
    empty = CropToLungBoxd(keys=["image"], mask_key="lung")({"image": hu[0], "lung": np.zeros((96, 96))})
    assert empty["lung_box"]["box"] is None and empty["image"].shape == (96, 96)
    assert not PasteFromLungBoxd(keys="image")(empty)["image"].any()
    with pytest.raises(KeyError):
        PasteFromLungBoxd(keys="image")({"image": np.zeros((3, 3))})


def test_crop_dict_uses_monai_meta_tensors() -> None:
    from monai.data import MetaTensor

    img = MetaTensor(torch.arange(64.0).reshape(1, 8, 8))
    mask = np.zeros((1, 8, 8))
    mask[0, 2:4, 3:5] = 1
    out = CropToLungBoxd(keys="image", mask_key="lung", margin_px=0)({"image": img, "lung": mask})
    assert out["image"].shape == (1, 2, 2) and out["image"].meta["lung_box"] == (2, 4, 3, 5)
    back = PasteFromLungBoxd(keys="image")(out)["image"]
    assert back.shape == (1, 8, 8) and float(back[0, 2, 3]) == float(img[0, 2, 3])


# ---------------------------------------------------------------------------------------------------
# edges


def test_edge_map_is_the_cross_gradient() -> None:
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 255
    e = edge_map(m)
    assert e.dtype == np.float32 and set(np.unique(e)) == {0.0, 1.0}
    # one pixel inside (36) and one outside (40, no corners: 4-connected dilation)
    assert e.sum() == 36 + 40
    assert e[5, 5] == 1 and e[4, 4] == 0 and e[10, 10] == 0
    assert edge_map(m, thickness=2).sum() == (100 - 36) + (14 * 14 - 4 * 3 - 100)
    np.testing.assert_array_equal(edge_map(m[None])[0], e)  # channel-first, planes separately
    np.testing.assert_array_equal(EdgeMap()(torch.from_numpy(m)), e)
    full = np.ones((6, 6))
    assert not edge_map(full).any()  # touching the border is not an edge
    assert not edge_map(np.zeros((6, 6))).any()
    with pytest.raises(ValueError):
        edge_map(m, thickness=0)


def test_edge_map_dict_multiple_keys() -> None:
    a, b = np.zeros((1, 10, 10)), np.zeros((1, 10, 10))
    a[0, 3:6, 3:6] = 1
    b[0, 1:9, 2:5] = 1  # another mask: each key's edges come from its own mask
    d = EdgeMapd(keys=["a", "b"])({"a": a, "b": b})
    assert "edge" not in d
    np.testing.assert_array_equal(d["a_edge"], edge_map(a))
    np.testing.assert_array_equal(d["b_edge"], edge_map(b))
    assert d["a_edge"].any() and not np.array_equal(d["a_edge"], d["b_edge"])


def test_strong_window_jitter_covers_washed_out_windows():
    from covseg.transforms.augment import train_transforms

    def centre_values(strong: bool) -> np.ndarray:
        t = train_transforms(64, strong_window_jitter=strong)
        t.set_random_state(0)
        item = {"image": np.full((1, 64, 64), 0.3, np.float32), "label": np.zeros((1, 64, 64), np.float32)}
        return np.array([float(t(dict(item))["image"][0, 28:36, 28:36].mean()) for _ in range(200)])

    strong, mild = centre_values(True), centre_values(False)
    assert strong.max() > 0.55 and strong.min() < 0.25  # air at grey ~0.35-0.6 and darker windows both occur
    assert mild.max() < 0.5


def test_the_volume_pipeline_functions_import_no_monai_and_old_transform_names_resolve() -> None:
    """``intensity``, ``lung`` and ``crop`` (and the volume engine built on them) import no MONAI and no scipy.signal;
    their MONAI transforms live in ``*_transforms`` and are still found under the old names (configs name them)."""
    from utils import python_output

    code = ("import sys; import covseg.engines.inference.volume; "
            "heavy = sorted({'monai', 'scipy.signal'} & set(sys.modules)); assert not heavy, heavy; "
            "from covseg.transforms.intensity import Rewindowd; from covseg.transforms.crop import CropToLungBoxd; "
            "from covseg.transforms import intensity_transforms, crop_transforms; "
            "assert Rewindowd is intensity_transforms.Rewindowd and CropToLungBoxd is crop_transforms.CropToLungBoxd; "
            "import covseg.transforms.crop as c; assert not hasattr(c, 'NoSuchTransform')")
    python_output(code)
