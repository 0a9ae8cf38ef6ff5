"""A generated chest-CT phantom in Hounsfield units with known lung and lesion masks.

Arrays are LPS ``[z, y, x]`` like :attr:`covseg.io.read.CTVolume.array`: ``z`` grows to the head, ``y``
to the patient's back, ``x`` to the patient's left, so the right lung (label 1) is on the image's left.
Anatomy is laid out in fractions of the field of view, so any shape gives a whole chest: air outside,
a body ellipse (subcutaneous fat ~-100 HU, soft tissue ~40 HU), spine, sternum and oblique ribs (bone
250-700 HU), heart, two lungs (~-850 HU with a posterior gradient, vessels, noise), trachea and main
bronchi (air, inside the body, ending in the lungs), and COVID-like lesions: fuzzy ground-glass
opacities (~-500..-300 HU) and consolidations (~-50..50 HU), clipped to the lungs.

Everything is vectorised (column intervals per lung, per-slice work only on small boxes); a
512x512x300 phantom takes about a second. Written to disk by :mod:`covseg.synthetic.phantom_nifti` and
:mod:`covseg.synthetic.phantom_dicom`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from covseg.io.read import CTVolume

__all__ = ["Phantom", "make_chest_phantom"]

GGO, CONSOLIDATION = 1, 2
RIGHT_LUNG, LEFT_LUNG = 1, 2


@dataclass
class Phantom:
    """A generated chest CT: ``hu`` int16 ``[z, y, x]`` (LPS) and its masks (uint8, same shape).

    ``lung_labels``: 0 outside, 1 right lung, 2 left lung (airways excluded, lesions included);
    ``infection``: 1 in lesions; ``lesion_classes``: 1 ground glass, 2 consolidation.
    ``spacing`` is (x, y, z) mm, ``origin`` the LPS position of voxel (0, 0, 0) in mm.
    """

    hu: np.ndarray
    lung_labels: np.ndarray
    infection: np.ndarray
    lesion_classes: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def as_volume(self, name: str = "phantom") -> CTVolume:
        """The phantom as a :class:`CTVolume` (float32 HU), as if read from disk."""
        return CTVolume.from_array(self.hu, self.spacing, name=name, origin=self.origin)

    def image(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image (LPS, identity direction) of ``array`` (default: ``hu``)."""
        img = sitk.GetImageFromArray(self.hu if array is None else array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        return img


def make_chest_phantom(shape: tuple[int, int, int] = (300, 512, 512),
                       spacing: tuple[float, float, float] = (0.7, 0.7, 1.0),
                       seed: int = 0, lesions: bool = True, n_ggo: int | None = None,
                       n_consolidation: int | None = None, noise_hu: float = 15.0) -> Phantom:
    """Generate a chest phantom of ``shape`` (z, y, x) voxels at ``spacing`` (x, y, z) mm.

    ``seed`` makes it reproducible; ``lesions=False`` gives healthy lungs. ``n_ggo`` / ``n_consolidation``
    default to 3-5 and 1-2 lesions (drawn from ``seed``).
    """
    nz, ny, nx = (int(s) for s in shape)
    if min(nz, ny, nx) < 1 or min(ny, nx) < 16:
        raise ValueError(f"phantom shape {shape} is too small (need at least 1x16x16)")
    sx, sy, sz = (float(s) for s in spacing)
    rng = np.random.default_rng(seed)

    # normalised in-plane coordinates: u -> patient left, v -> posterior, both in [-1, 1]
    u = ((np.arange(nx, dtype=np.float32) + 0.5) / nx * 2 - 1)[None, :]
    v = ((np.arange(ny, dtype=np.float32) + 0.5) / ny * 2 - 1)[:, None]
    def t_of(t):  # fraction of the height -> slice index
        return t * max(nz - 1, 1)

    zmm = np.arange(nz, dtype=np.float32) * sz
    mm_per_u = nx / 2 * sx  # millimetres per unit of u

    # ---- the static 2D section: air, fat, muscle, spine, sternum ----------------------------------
    rb = np.sqrt((u / 0.86) ** 2 + ((v - 0.02) / 0.62) ** 2)
    base = np.full((ny, nx), -1000, np.int16)
    base[rb <= 1.0] = -100
    base[rb <= 0.93] = 40
    r_spine = np.sqrt((u / 0.085) ** 2 + ((v - 0.40) / 0.085) ** 2)
    r_canal = np.sqrt((u / 0.035) ** 2 + ((v - 0.55) / 0.035) ** 2)
    lamina = (np.sqrt((u / 0.065) ** 2 + ((v - 0.55) / 0.065) ** 2) <= 1) & (r_canal > 1)
    vertebra = r_spine <= 1
    base[vertebra] = 250
    base[(r_spine > 0.8) & vertebra] = 700
    base[lamina] = 600
    base[r_canal <= 1] = 20
    base[(np.abs(u) < 0.06) & (np.abs(v + 0.55) < 0.025)] = 500  # sternum

    hu = np.broadcast_to(base, (nz, ny, nx)).copy()

    # intervertebral discs every ~25 mm
    disc_z = np.flatnonzero((zmm % 25.0) < 5.0)
    vy, vx = np.nonzero(vertebra)
    if disc_z.size and vy.size:
        hu[disc_z[:, None], vy[None, :], vx[None, :]] = 80

    # ---- lungs: per column a z interval (apex dome above, diaphragm dome below) ----------------------
    lung_labels = np.zeros((nz, ny, nx), np.uint8)
    zz = np.arange(nz, dtype=np.int16)[:, None, None]
    heart_q = ((u - 0.08) / 0.30) ** 2 + ((v + 0.12) / 0.28) ** 2
    heart_h = 0.20 * np.sqrt(np.clip(1 - heart_q, 0, None))
    heart_lo, heart_hi = _interval(0.35 - heart_h, 0.35 + heart_h, heart_q < 1, t_of)
    lung_spec = [  # label, centre u, half-width, diaphragm base (fraction of height)
        (RIGHT_LUNG, -0.40, 0.27, 0.10),
        (LEFT_LUNG, 0.42, 0.25, 0.07),
    ]
    lung_q = {}
    for label, cu, au, t_base in lung_spec:
        q = ((u - cu) / au) ** 2 + ((v - 0.03) / 0.45) ** 2
        root = np.sqrt(np.clip(1 - q, 0, None))
        lo, hi = _interval(t_base + 0.25 * root, 0.55 + 0.38 * root, q < 1, t_of)
        ys, xs = np.nonzero(hi >= lo)
        if ys.size:  # work in the lung's bounding box only; the heart carves its notch
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            z0, z1 = max(int(lo[y0:y1, x0:x1].min()), 0), min(int(hi.max()) + 1, nz)
            zs = zz[z0:z1]
            c_lo, c_hi = lo[y0:y1, x0:x1], hi[y0:y1, x0:x1]
            h_lo, h_hi = heart_lo[y0:y1, x0:x1], heart_hi[y0:y1, x0:x1]
            mask = (zs >= c_lo) & (zs <= c_hi) & ((zs < h_lo) | (zs > h_hi))
            lung_labels[z0:z1, y0:y1, x0:x1][mask] = label
        lung_q[label] = (q, lo, hi)
    lung = lung_labels > 0
    # parenchyma: denser posteriorly (dependent lung), -880 .. -800 HU
    lung_hu = (-840 + 40 * np.clip((v - 0.03) / 0.45, -1, 1)).astype(np.int16)
    np.copyto(hu, np.broadcast_to(lung_hu, hu.shape), where=lung)

    # ribs: oblique bands in the chest wall over the lung height, absent at the sternum
    ring = (rb > 0.80) & (rb < 0.88) & ~((np.abs(u) < 0.15) & (v < 0))
    ry_, rx_ = np.nonzero(ring)
    if ry_.size:
        # angle from the back (0) to the front (pi); ribs run down and forward, ~4 sections per side
        angle = np.abs(np.arctan2(u[0, rx_], v[ry_, 0] - 0.02))
        phase = zmm[:, None] / 25.0 + 4.0 * angle[None, :] / np.pi
        z_ok = ((zmm >= t_of(0.05) * sz) & (zmm <= t_of(0.95) * sz))[:, None]
        rib = ((phase % 1.0) < 0.35) & z_ok & ~lung[:, ry_, rx_]
        cur = hu[:, ry_, rx_]
        hu[:, ry_, rx_] = np.where(rib, np.int16(450), cur)

    # vessels: short tubes, mostly along z, inside the lungs
    n_vessels = int(np.clip(nx * ny / 4000, 8, 80))
    for _ in range(n_vessels):
        label = int(rng.integers(1, 3))
        y0, x0, z0 = _random_lung_point(rng, lung_q[label], t_of, peripheral=False)
        if y0 < 0:
            continue
        length = int(max(2, rng.uniform(15, 60) / sz))
        radius = float(np.clip(rng.uniform(1.0, 3.0) / sx, 0.8, max(0.8, nx / 100)))
        dy, dx = rng.normal(0, 0.3, 2) * sz / max(sx, 1e-6)
        for k in range(length):
            z = z0 + k - length // 2
            if not 0 <= z < nz:
                continue
            _disc(hu[z], lung[z], y0 + dy * (k - length // 2), x0 + dx * (k - length // 2), radius, 30)

    # ---- lesions ----------------------------------------------------------------------------------------
    lesion_classes = np.zeros((nz, ny, nx), np.uint8)
    if lesions:
        n_g = int(rng.integers(3, 6)) if n_ggo is None else n_ggo
        n_c = int(rng.integers(1, 3)) if n_consolidation is None else n_consolidation
        kinds = [GGO] * n_g + [CONSOLIDATION] * n_c
        for kind in kinds:
            label = RIGHT_LUNG if rng.random() < 0.5 else LEFT_LUNG
            y0, x0, z0 = _random_lung_point(rng, lung_q[label], t_of, peripheral=True)
            if y0 < 0:
                continue
            size = rng.uniform(10, 25) if kind == GGO else rng.uniform(6, 14)  # mm at a 358 mm field of view
            r_mm = size * mm_per_u / 179.2
            _lesion(hu, lesion_classes, lung, kind, (z0, y0, x0), r_mm, (sx, sy, sz), rng)

    # ---- airways (drawn last: air, not lung, not lesion) ------------------------------------------------
    carina = int(round(t_of(0.62)))
    top = int(round(t_of(0.97)))
    bottom = int(round(t_of(0.52)))
    airway = np.zeros((max(top + 1 - bottom, 0), ny, nx), bool)  # the airway slab; index z - bottom
    cy, cx = (0.15 + 1) / 2 * ny - 0.5, nx / 2 - 0.5
    r_tr = 0.05 * nx / 2
    yy, xx = np.ogrid[:ny, :nx]
    trachea2d = (yy - cy) ** 2 + (xx - cx) ** 2 <= r_tr**2
    if top >= carina:
        airway[carina - bottom : top + 1 - bottom] |= trachea2d
    for end_u, end_v, end_t in ((-0.25, 0.10, 0.55), (0.28, 0.12, 0.52)):
        z_end = int(round(t_of(end_t)))
        n = max(carina - z_end, 1)
        for k in range(n + 1):
            f = k / n
            z = carina - k
            if not 0 <= z - bottom < len(airway):
                continue
            by = cy + f * ((end_v + 1) / 2 * ny - 0.5 - cy)
            bx = cx + f * ((end_u + 1) / 2 * nx - 0.5 - cx)
            rad = max(0.7 * r_tr * (1 - 0.3 * f), 1.0)
            _disc(airway[z - bottom], None, by, bx, rad, True)
    slab = slice(bottom, bottom + len(airway))
    hu[slab][airway] = -1000
    lung_labels[slab][airway] = 0
    lesion_classes[slab][airway] = 0

    # ---- noise: Gaussian, 2x2 correlated like reconstructed CT texture ----------------------------------
    if noise_hu > 0:
        noise = (rng.standard_normal((nz, (ny + 1) // 2, (nx + 1) // 2), dtype=np.float32) * noise_hu)
        noise = noise.astype(np.int16)
        if ny % 2 == 0 and nx % 2 == 0:  # one pass: each noise value fills a 2x2 block
            hu.reshape(nz, ny // 2, 2, nx // 2, 2)[...] += noise[:, :, None, :, None]
        else:
            for oy in (0, 1):
                for ox in (0, 1):
                    tgt = hu[:, oy::2, ox::2]
                    tgt += noise[:, : tgt.shape[1], : tgt.shape[2]]
    np.clip(hu, -1024, 3071, out=hu)

    infection = (lesion_classes > 0).astype(np.uint8)
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    return Phantom(hu=hu, lung_labels=lung_labels, infection=infection, lesion_classes=lesion_classes,
                   spacing=(sx, sy, sz), origin=origin)


def _interval(t_lo, t_hi, inside, t_of) -> tuple[np.ndarray, np.ndarray]:
    """2D int16 slice-index bounds of a column interval; empty (lo > hi) outside ``inside``."""
    lo = np.where(inside, np.ceil(t_of(t_lo)), 32000).astype(np.int16)
    hi = np.where(inside, np.floor(t_of(t_hi)), -1).astype(np.int16)
    return lo, hi


def _random_lung_point(rng: np.random.Generator, lung: tuple, t_of, peripheral: bool) -> tuple[int, int, int]:
    q, lo, hi = lung
    cols = np.flatnonzero((hi - lo) >= 2)
    if cols.size == 0:
        return -1, -1, -1
    for _ in range(50):
        c = int(cols[rng.integers(cols.size)])
        y, x = divmod(c, q.shape[1])
        qq = float(q[y, x])
        if qq > 0.8 or (peripheral and rng.random() > 0.2 + 0.8 * qq / 0.8):
            continue
        z = int(rng.integers(lo[y, x] + 1, hi[y, x]))
        return y, x, z
    c = int(cols[rng.integers(cols.size)])
    y, x = divmod(c, q.shape[1])
    return y, x, int((int(lo[y, x]) + int(hi[y, x])) // 2)


def _disc(plane: np.ndarray, within: np.ndarray | None, cy: float, cx: float, r: float, value) -> None:
    """Set a disc of radius ``r`` px in a 2D ``plane`` to ``value`` (only where ``within``)."""
    ny, nx = plane.shape
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, ny)
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, nx)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if within is not None:
        m &= within[y0:y1, x0:x1]
    plane[y0:y1, x0:x1][m] = value


def _lesion(hu: np.ndarray, classes: np.ndarray, lung: np.ndarray, kind: int, centre: tuple[int, int, int],
            r_mm: float, spacing: tuple[float, float, float], rng: np.random.Generator) -> None:
    """Blend one fuzzy lesion into ``hu`` inside the lungs and record it in ``classes``."""
    sx, sy, sz = spacing
    radii = np.array([r_mm / sz, r_mm / sy * rng.uniform(0.8, 1.2), r_mm / sx * rng.uniform(0.8, 1.2)])
    radii = np.maximum(radii, 1.0)
    lo = [max(int(c - 1.4 * r), 0) for c, r in zip(centre, radii)]
    hi = [min(int(c + 1.4 * r) + 2, n) for c, r, n in zip(centre, radii, hu.shape)]
    if any(a >= b for a, b in zip(lo, hi)):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    zz, yy, xx = np.ogrid[box]
    dz, dy, dx = (zz - centre[0]) / radii[0], (yy - centre[1]) / radii[1], (xx - centre[2]) / radii[2]
    d = np.sqrt(dz**2 + dy**2 + dx**2)
    # lumpy outline: a few random low-frequency ripples
    ph = rng.uniform(0, 2 * np.pi, 3)
    fr = rng.uniform(1.5, 3.5, 3)
    lumps = (np.sin(fr[0] * dz + ph[0]) * np.sin(fr[1] * dy + ph[1]) * np.sin(fr[2] * dx + ph[2]))
    d = (d * (1 + 0.25 * lumps)).astype(np.float32)
    in_lung = lung[box]
    if kind == GGO:
        target, width, cut = rng.uniform(-480, -330), 0.35, 0.85
    else:
        target, width, cut = rng.uniform(-30, 40), 0.12, 0.95
    w = np.clip((1.0 - d) / width, 0, 1) * in_lung
    sub = hu[box]
    sub[...] = np.round(sub * (1 - w) + target * w).astype(np.int16)
    mask = (d < cut) & in_lung
    cls = classes[box]
    cls[mask] = np.maximum(cls[mask], kind)
