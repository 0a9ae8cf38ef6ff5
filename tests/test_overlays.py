"""Overlay pictures: orientation (asymmetric phantom), aspect from spacing, contour colours, slice choice,
heat-map overlay, written PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from covseg.reports.picks import pick_slices
from covseg.reports.pictures.contours import CLASS_COLOURS, INFECTION_COLOUR, inner_edge
from covseg.reports.pictures.heatmap import activation_beside_mask, heatmap_overlay
from covseg.reports.pictures.montage import montage_png
from covseg.reports.pictures.panels import axial_panel, coronal_panel, sagittal_panel
from covseg.reports.pictures.reformats import reformats_png
from covseg.reports.pictures.volume_figures import write_volume_figures

SPACING = (1.0, 1.0, 4.0)  # x, y, z mm


def _capture_figures(monkeypatch) -> list:
    """The matplotlib figures the montage and the reformats encode, in the order they are drawn."""
    from covseg.reports.pictures import montage, reformats

    figures = []
    for module in (montage, reformats):
        real = module.png_bytes
        monkeypatch.setattr(module, "png_bytes", lambda fig, dpi, real=real: figures.append(fig) or real(fig, dpi))
    return figures


def _asymmetric():
    """Air everywhere, one bright block anterior (small y), right (small x), superior (large z)."""
    hu = np.full((20, 40, 40), -1000.0, np.float32)
    hu[15:19, 3:10, 3:10] = 400.0
    marker = np.zeros(hu.shape, np.uint8)
    marker[15:19, 3:10, 3:10] = 1
    return hu, marker


def _quadrant(rgb: np.ndarray) -> tuple[str, str]:
    """Where the bright pixels are: ('top'|'bottom', 'left'|'right')."""
    grey = rgb.mean(axis=2)
    rows, cols = np.nonzero(grey > 200)
    assert rows.size, "marker not visible"
    h, w = grey.shape
    return ("top" if rows.mean() < h / 2 else "bottom"), ("left" if cols.mean() < w / 2 else "right")


def test_axial_anterior_up_patient_right_on_the_left():
    hu, _ = _asymmetric()
    assert _quadrant(axial_panel(hu, np.zeros_like(hu), SPACING, 16)) == ("top", "left")


def test_coronal_superior_up_patient_right_on_the_left():
    hu, _ = _asymmetric()
    assert _quadrant(coronal_panel(hu, np.zeros_like(hu), SPACING, 5)) == ("top", "left")


def test_sagittal_superior_up_anterior_on_the_left():
    hu, _ = _asymmetric()
    assert _quadrant(sagittal_panel(hu, np.zeros_like(hu), SPACING, 5)) == ("top", "left")


def test_reformat_aspect_follows_spacing():
    hu, _ = _asymmetric()  # 20 slices x 4 mm = 80 mm high, 40 x 1 mm = 40 mm wide
    cor = coronal_panel(hu, np.zeros_like(hu), SPACING, 5)
    sag = sagittal_panel(hu, np.zeros_like(hu), (1.0, 0.5, 4.0), 5)  # 40 x 0.5 mm = 20 mm wide
    assert cor.shape[0] / cor.shape[1] == pytest.approx(2.0, rel=0.05)
    assert sag.shape[0] / sag.shape[1] == pytest.approx(4.0, rel=0.05)
    ax = axial_panel(hu, np.zeros_like(hu), (1.0, 2.0, 4.0), 3)  # rows 2 mm apart: twice as tall
    assert ax.shape[0] / ax.shape[1] == pytest.approx(2.0, rel=0.05)


def _has_colour(rgb: np.ndarray, colour) -> bool:
    return bool(np.all(rgb == np.array(colour, np.uint8), axis=2).any())


def test_inner_edge_is_skimages_inner_boundary():
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(0)
    masks = [rng.random((40, 56)) > p for p in (0.2, 0.5, 0.8)] + [np.ones((9, 7), bool), np.zeros((9, 7), bool)]
    masks.append(np.pad(np.ones((5, 5), bool), 3))
    for mask in masks:
        np.testing.assert_array_equal(inner_edge(mask), find_boundaries(mask, mode="inner"))
    assert inner_edge(masks[-1]).sum() == 16  # the ring of a 5x5 square


def test_contours_binary_and_two_classes():
    hu, marker = _asymmetric()
    binary = axial_panel(hu, marker, SPACING, 16)
    assert _has_colour(binary, INFECTION_COLOUR)
    assert not _has_colour(binary, CLASS_COLOURS[1])
    classes = np.zeros_like(marker)
    classes[15:19, 3:10, 3:6] = 1
    classes[15:19, 20:30, 20:30] = 2
    multi = axial_panel(hu, classes > 0, SPACING, 16, classes=classes)
    assert _has_colour(multi, CLASS_COLOURS[1]) and _has_colour(multi, CLASS_COLOURS[2])
    assert not _has_colour(multi, INFECTION_COLOUR)
    # contours follow the orientation too: consolidation (x, y >= 20) lies bottom-right
    rows, cols = np.nonzero(np.all(multi == np.array(CLASS_COLOURS[2], np.uint8), axis=2))
    assert rows.mean() > multi.shape[0] / 2 and cols.mean() > multi.shape[1] / 2


def test_pick_slices_most_infected_plus_even():
    inf = np.zeros((50, 8, 8), np.uint8)
    inf[30, :4] = 1
    inf[31, :6] = 1
    inf[10, :1] = 1
    lung = np.zeros_like(inf)
    lung[5:45] = 1
    inf[20, :2] = 1
    zs, top = pick_slices(inf, lung, n=8)
    assert len(zs) == 8 and zs == sorted(zs, reverse=True)
    assert top == {31, 20, 10}  # by area, but 30 is within 40 / 8 = 5 slices of 31: one lesion shown once
    assert min(zs) >= 5 and max(zs) <= 44
    assert 5 in zs and 44 in zs  # the lung's ends are part of the even spread
    short, _ = pick_slices(np.zeros((3, 4, 4), np.uint8), None, n=12)
    assert short == [2, 1, 0]


def test_heatmap_overlay_colours_and_contour():
    img = np.full((32, 32), 0.5, np.float32)
    heat = np.zeros((8, 8), np.float32)
    heat[0, 0] = 10.0  # peak at the top-left, resized to 32x32
    mask = np.zeros((32, 32), bool)
    mask[20:28, 20:28] = True
    rgb = heatmap_overlay(img, heat, mask)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    r, g, b = (int(v) for v in rgb[0, 0])
    assert r > b  # jet: high = red
    r2, g2, b2 = (int(v) for v in rgb[10, 10])
    assert b2 > r2  # low = blue
    assert tuple(rgb[20, 20]) == (255, 255, 255) and tuple(rgb[24, 24]) != (255, 255, 255)
    hu_rgb = heatmap_overlay(np.full((8, 8), -600.0), np.zeros((8, 8)), window=(-600.0, 1500.0), alpha=0.0)
    assert int(hu_rgb[0, 0, 0]) == 128  # level of the window = mid-grey


def test_heatmap_overlay_leaves_uncovered_pixels_grey():
    img = np.full((16, 16), 0.25, np.float32)
    heat = np.full((16, 16), np.nan, np.float32)
    heat[4:8, 4:12] = np.linspace(0.2, 0.9, 32, dtype=np.float32).reshape(4, 8)
    rgb = heatmap_overlay(img, heat)
    grey = round(0.25 * 255)
    assert np.all(rgb[:4] == grey) and np.all(rgb[8:] == grey)  # no map: the slice as it is
    inside = rgb[4:8, 4:12].astype(int)
    assert inside[0, 0, 2] > inside[0, 0, 0] and inside[-1, -1, 0] > inside[-1, -1, 2]  # low blue, high red
    assert np.all(heatmap_overlay(img, np.full((16, 16), np.nan)) == grey)


def test_activation_beside_mask():
    img = np.linspace(0.0, 1.0, 24 * 24, dtype=np.float32).reshape(24, 24)
    heat = np.zeros((24, 24), np.float32)
    heat[:8, :8] = 1.0
    mask = np.zeros((24, 24), bool)
    mask[10:20, 10:20] = True
    rgb = activation_beside_mask(img, heat, mask, gap=2)
    assert rgb.shape == (24, 50, 3)
    left, right = rgb[:, :24], rgb[:, 26:]
    assert tuple(left[10, 10]) == INFECTION_COLOUR and tuple(right[10, 10]) == (255, 255, 255)
    assert left[2, 2, 0] == left[2, 2, 1] == left[2, 2, 2]  # left: plain grey CT
    assert right[2, 2, 0] > right[2, 2, 2]  # right: heat (red) where the map is high
    assert np.all(rgb[:, 24:26] == 0)


def test_write_volume_figures(tmp_path):
    hu, marker = _asymmetric()
    lung = np.zeros_like(marker)
    lung[2:19, 2:38, 2:38] = 1
    files = write_volume_figures(tmp_path, hu, lung, marker, SPACING, name="asym", overlays="all")
    assert files == {"montage": "montage.png", "reformats": "reformats.png", "overlays": "overlays"}
    for key in ("montage", "reformats"):
        with Image.open(tmp_path / files[key]) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    slices = sorted((tmp_path / "overlays").glob("slice_*.png"))
    assert len(slices) == hu.shape[0]
    with Image.open(slices[16]) as im:
        assert _has_colour(np.asarray(im.convert("RGB")), INFECTION_COLOUR)
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match="overlays"):
        write_volume_figures(tmp_path, hu, lung, marker, SPACING, overlays="some")


def test_montage_of_a_short_volume_has_no_empty_columns():
    hu, marker = _asymmetric()
    two = Image.open(io.BytesIO(montage_png(hu[15:17], marker[15:17], SPACING, n=12, dpi=50)))
    full = Image.open(io.BytesIO(montage_png(hu, marker, SPACING, n=12, dpi=50)))
    assert two.width * 1.5 < full.width  # 2 panels side by side, not 2 of a 4-column grid
    assert two.height < full.height


@pytest.mark.parametrize("planes", [slice(15, 17), slice(None)])
def test_montage_panels_fill_their_cells(planes):
    """No black band between the heading and the panels, or between rows: each cell is as high as its panel (the
    figure was sized for a taller cell, so a wide panel floated with 31-41 black rows above and below it)."""
    hu, marker = _asymmetric()
    grey = np.asarray(Image.open(io.BytesIO(montage_png(hu[planes], marker[planes], SPACING, n=12, dpi=50)))
                      .convert("L"))
    black = grey.max(axis=1) < 10
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], black.astype(int), [0]]))))[::2]
    assert runs.max() <= 12, runs


def test_reformats_fill_their_boxes():
    """Coronal and sagittal panels equally high and placed in inches: no black band above them (23 rows before)."""

    hu, marker = _asymmetric()
    grey = np.asarray(Image.open(io.BytesIO(reformats_png(hu, marker, SPACING, dpi=50))).convert("L"))
    black = grey.max(axis=1) < 10
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], black.astype(int), [0]]))))[::2]
    assert runs.max() <= 15, runs


def test_activation_montage_keeps_the_view_and_outlines_the_crop():
    from PIL import Image

    from covseg.reports.activation_montage import CROP_OUTLINE, KEY_HEIGHT, ActivationPanel, activation_montage_png

    image = np.full((40, 80), 0.3, np.float32)  # a view twice as wide as high
    heat = np.full((40, 80), np.nan, np.float32)
    heat[10:20, 30:50] = 1.0
    panels = [ActivationPanel(z, 0.9 - z / 10, image, heat, None, (10, 20, 30, 50)) for z in range(3)]
    sheet = np.asarray(Image.open(io.BytesIO(activation_montage_png(panels, height=40, columns=2))).convert("RGB"))
    caption, gap = 18, 4
    assert sheet.shape[0] == 2 * (40 + caption) + KEY_HEIGHT  # 3 panels in 2 columns: 2 rows, each 40 px + its
    # caption, and the key under them
    assert sheet.shape[1] == 2 * (2 * 80 + 2 * gap)  # each half keeps the 2:1 view: 80 px wide at 40 px high
    right = sheet[caption:caption + 40, 80 + gap:2 * 80 + gap]
    assert tuple(right[10, 40]) == CROP_OUTLINE  # the crop's top edge
    assert tuple(right[0, 0]) == tuple(sheet[caption, 0]) and len(set(right[0, 0])) == 1  # grey outside the crop
    with pytest.raises(ValueError, match="slice 1"):
        activation_montage_png([panels[0], ActivationPanel(1, 0.5, image[:20], heat[:20], None, (0, 5, 0, 5))])


def test_activation_montage_title_sits_above_the_grid():
    from PIL import Image

    from covseg.reports.activation_montage import CROP_OUTLINE, ActivationPanel, activation_montage_png

    image = np.full((40, 80), 0.3, np.float32)
    heat = np.full((40, 80), np.nan, np.float32)
    panels = [ActivationPanel(0, 0.9, image, heat, None, (10, 20, 30, 50))]
    plain = np.asarray(Image.open(io.BytesIO(activation_montage_png(panels, height=40))).convert("RGB"))
    titled = np.asarray(Image.open(io.BytesIO(activation_montage_png(panels, height=40, title="ct: NEGATIVE")))
                        .convert("RGB"))
    strip = titled.shape[0] - plain.shape[0]
    assert strip == 18 + 4 and titled.shape[1] == plain.shape[1]
    assert np.array_equal(titled[strip:], plain)  # the grid, moved down unchanged
    yellow = (titled[:strip, :, 0] > 200) & (titled[:strip, :, 1] > 200) & (titled[:strip, :, 2] < 60)
    assert yellow.sum() > 20  # the title's text
    assert tuple(titled[strip + 18 + 10, 80 + 4 + 40]) == CROP_OUTLINE


def test_activation_montage_text_has_its_glyphs_a_key_and_orientation_letters():
    """The montage's text used Pillow's built-in 10-px font, which draws the ² of an indeterminate patient's title
    ('largest lung cross-section 96.6 cm²') as an empty box; the sheet had no colour scale for the maps (each
    scaled to its own range), no key to the red contour and the blue crop, no orientation letters, and a long title
    ran off its right edge."""
    from PIL import Image

    from covseg.reports.activation_montage import (
        KEY_HEIGHT,
        LETTER_COLOUR,
        ActivationPanel,
        activation_montage_png,
        montage_font,
    )

    font = montage_font()
    tofu = np.asarray(font.getmask("\ue000"))  # a private-use code point: no font has it, the empty box is drawn
    for char in "²≥":
        glyph = np.asarray(font.getmask(char))
        assert glyph.shape != tofu.shape or not np.array_equal(glyph, tofu), f"{char!r} drawn as an empty box"

    image = np.full((120, 160), 0.2, np.float32)
    heat = np.full(image.shape, np.nan, np.float32)
    heat[20:100, 20:140] = np.linspace(0.0, 1.0, 120, dtype=np.float32)[None, :]
    panels = [ActivationPanel(z, 0.9, image, heat, None, (20, 100, 20, 140)) for z in range(2)]
    title = "ct: INDETERMINATE (largest lung cross-section 96.6 cm²), " + "11 of 11 classified slices " * 8
    one_line = activation_montage_png(panels, title="ct: NEGATIVE")
    sheet = np.asarray(Image.open(io.BytesIO(activation_montage_png(panels, title=title))).convert("RGB"))
    assert sheet.shape[0] > np.asarray(Image.open(io.BytesIO(one_line))).shape[0]  # wrapped, not cut off
    key = sheet[-KEY_HEIGHT:].astype(int)
    jet_blue = (key[..., 2] > 120) & (key[..., 0] < 40) & (key[..., 1] < 40)
    jet_red = (key[..., 0] > 120) & (key[..., 1] < 40) & (key[..., 2] < 40)
    assert jet_blue.sum() > 20 and jet_red.sum() > 20  # the colour bar, low to high
    grid = sheet[:-KEY_HEIGHT]
    letters = np.all(grid == np.array(LETTER_COLOUR, np.uint8), axis=2)
    assert letters.sum() >= 4 * 4 * 3  # A, P, R, L on each of the 4 halves (anti-aliased: a few exact pixels each)


def test_a_slice_overlay_says_what_it_shows(tmp_path):
    """overlays/slice_<z>.png used to be the bare panel: no slice index, no volume, no colour key and no
    orientation letters, so a file opened on its own (or sent on) did not say what it showed."""
    from covseg.reports.pictures.pil_marks import LETTER_COLOUR
    from covseg.reports.pictures.slice_overlay import write_slice_overlays

    hu = np.full((4, 128, 128), -1000.0, np.float32)
    hu[:, 20:108, 20:108] = 40.0
    marker = np.zeros(hu.shape, np.uint8)
    marker[2, 40:60, 30:50] = 1
    classes = marker.copy()
    classes[2, 40:60, 40:50] = 2
    for cls, keys in ((None, [INFECTION_COLOUR]), (classes, list(CLASS_COLOURS.values()))):
        folder = tmp_path / ("multi" if cls is not None else "binary")
        (path,) = write_slice_overlays(folder, hu, marker, (1.0, 1.0, 3.0), classes=cls, name="case7")
        assert path.name == "slice_0002.png"
        rgb = np.asarray(Image.open(path).convert("RGB"))
        panel = axial_panel(hu, marker, (1.0, 1.0, 3.0), 2, cls, max_px=512)
        strip = rgb.shape[0] - panel.shape[0]
        assert strip >= 12 and rgb.shape[1] == panel.shape[1]  # a caption above the slice, same width
        head = rgb[:strip]
        assert (head.min(axis=2) > 200).sum() > 50  # its white text: volume, z, area
        assert all(_has_colour(head, c) for c in keys)  # the colour key
        letters = np.all(rgb[strip:] == np.array(LETTER_COLOUR, np.uint8), axis=2)
        assert letters.sum() >= 4 * 3  # A, P, R, L (anti-aliased: a few exact pixels each)
        body = rgb[strip:].copy()
        body[letters] = panel[letters]
        changed = np.any(body != panel, axis=2)
        assert changed.sum() < 0.05 * changed.size  # otherwise the slice is drawn as before (letters' outlines)


def test_a_narrow_slice_overlay_wraps_its_caption_inside_the_picture():
    """On chest-cip64 (64 pixels of 4.2 mm: a 128-pixel overlay) 'lung window L -600 W 1500 HU' ran off the
    right edge."""
    from PIL import ImageDraw

    from covseg.reports.pictures.pil_marks import flow, pil_font

    font = pil_font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    parts = [("ct  axial z=25", (255, 255, 255)), ("lung window L -600 W 1500 HU", (200, 200, 200)),
             ("(z: 0 = most inferior slice)", (200, 200, 200)), ("\u25a0 ground-glass opacity", CLASS_COLOURS[1])]
    lines = flow(draw, parts, 128, font)  # (what a 128-pixel panel would get; overlays are now 256 at least)
    ends = [x + draw.textlength(text, font=font) for line in lines for x, text, _ in line]
    assert max(ends) <= 128 and len(lines) >= 4
    words = " ".join(text for line in lines for _, text, _ in line)
    assert all(w in words.split(" ") for part, _ in parts for w in part.split())  # nothing lost


def test_a_coarse_scans_slice_overlay_is_enlarged_by_whole_pixels(tmp_path):
    from covseg.reports.pictures.slice_overlay import OVERLAY_MIN_PX, slice_overlay

    hu, marker = _asymmetric()  # 40 x 40 pixels of 1 mm: an 80-pixel panel
    panel = axial_panel(hu, marker, SPACING, 16, max_px=512)
    rgb = slice_overlay(hu, marker, SPACING, 16, name="asym")
    assert panel.shape[1] == 80 and rgb.shape[1] == 320 >= OVERLAY_MIN_PX
    body = rgb[rgb.shape[0] - 320:]
    assert _has_colour(body, INFECTION_COLOUR)
    np.testing.assert_array_equal(body[200:240:4, 100:140:4], panel[50:60, 25:35])  # whole pixels, 4x


def test_orientation_letters_are_outlined_so_that_they_read_on_white_tissue():
    """The montage's and the reformats' light blue letters had no outline and vanished on the chest wall's white
    soft tissue, where R and L of an axial slice lie."""
    from covseg.reports.pictures.agg import agg_figure, bare, letters
    from covseg.reports.pictures.png import png_bytes

    fig = agg_figure((2.0, 2.0))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(np.full((64, 64, 3), 255, np.uint8), interpolation="nearest")
    bare(ax)
    letters(ax, "A", "P", "R", "L")
    rgb = np.asarray(Image.open(io.BytesIO(png_bytes(fig, 100))).convert("RGB")).astype(int)
    blue = (rgb[..., 2] > 200) & (rgb[..., 0] < 180)  # the letters' #7fd4ff
    dark = rgb.max(axis=2) < 80  # their outline on the white panel
    assert blue.sum() > 20 and dark.sum() > blue.sum()


def test_reformats_of_a_thin_slab_are_stacked_at_full_width():
    """A 20-slice, 2 mm series across 500 mm (the abdominal DICOM of ct-volumes) got its coronal and sagittal side by
    side as strips 34 pixels high in a figure three quarters black, S over I in the middle of each strip."""

    hu = np.full((10, 200, 200), -600.0, np.float32)  # 10 mm high, 200 mm wide and deep: mid-grey in the window
    rgb = np.asarray(Image.open(io.BytesIO(reformats_png(hu, np.zeros(hu.shape, np.uint8), (1.0, 1.0, 1.0))))
                     .convert("RGB")).astype(int)
    grey = np.abs(rgb - 128).max(axis=2) <= 2
    assert grey.mean() > 0.25  # the panels fill the figure (side by side: 0.04)
    rows = np.nonzero(grey.any(axis=1))[0]
    assert rows.size > 2 * 35  # two panels each at least 35 pixels high (side by side: 21)
    cols = np.nonzero(grey.any(axis=0))[0]
    assert cols.size > 0.9 * rgb.shape[1]  # each across the figure's width
    square = np.asarray(Image.open(io.BytesIO(reformats_png(np.full((40, 40, 40), -600.0, np.float32),
                                                            np.zeros((40, 40, 40), np.uint8), (1.0, 1.0, 1.0)))))
    assert square.shape[1] == 900 and square.shape[0] < 600  # a chest-shaped volume keeps the side-by-side layout


def test_headings_give_the_window_and_how_slices_are_numbered(monkeypatch):
    """The headings said 'lung window' without its level and width, and 'z=53' without saying that z counts from
    the most inferior slice (a PACS numbers a chest CT from the top), so a reader looking the slice up went wrong."""
    figures = _capture_figures(monkeypatch)
    hu, marker = _asymmetric()
    montage_png(hu, marker, SPACING, n=4, dpi=30)
    reformats_png(hu, marker, SPACING, dpi=30)
    montage, reformats = (fig._suptitle.get_text() for fig in figures)
    for words in ("L -600 W 1500 HU", "0 = most inferior"):
        assert words in montage
    assert "L -600 W 1500 HU" in reformats


def test_a_volume_of_too_few_slices_gets_the_montage_only(tmp_path):
    from covseg.reports.picks import THROUGH_PLANE_MIN_SLICES

    hu, marker = _asymmetric()
    lung = np.zeros_like(marker)
    lung[:, 2:38, 2:38] = 1
    short = slice(20 - THROUGH_PLANE_MIN_SLICES + 1, 20)  # the marker sits in slices 15-18
    files = write_volume_figures(tmp_path / "short", hu[short], lung[short], marker[short], SPACING)
    assert files == {"montage": "montage.png"} and not (tmp_path / "short" / "reformats.png").exists()
    enough = slice(20 - THROUGH_PLANE_MIN_SLICES, 20)
    files = write_volume_figures(tmp_path / "enough", hu[enough], lung[enough], marker[enough], SPACING)
    assert files == {"montage": "montage.png", "reformats": "reformats.png"}


def test_colour_key_entries_never_overlap_on_a_narrow_figure():
    """The multi-class key of a 2-slice montage (4.8 inches wide) used to draw 'consolidation' over the end of
    'ground-glass opacity'; each entry now starts after the previous one's drawn width, inside the figure."""
    import matplotlib.pyplot as plt

    from covseg.reports.pictures.agg import legend

    fig = plt.figure(figsize=(4.8, 3.2))
    try:
        texts = legend(fig, multi=True)
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in texts]
    finally:
        plt.close(fig)
    assert len(boxes) == 2 and boxes[0].x1 < boxes[1].x0 and boxes[1].x1 <= fig.bbox.width


def test_importing_the_pictures_leaves_the_users_matplotlib_backend():
    """covseg draws outside pyplot: importing it must not switch the backend of a notebook or GUI user."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); "
            "import covseg.reports.pictures.volume_figures, covseg.reports.curves; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_warm_pictures_imports_the_picture_modules_in_a_thread_after_monai():
    """run_batch imports the pictures' modules in a thread while its first volume is read; after MONAI's
    stand-ins (covseg.monai_import), the real matplotlib and skimage.transform must come in."""
    from utils import python_output

    code = ("import sys; from covseg.monai_import import import_monai; import_monai(); "
            "from covseg.engines.inference.pictures_job import warm_pictures; "
            "assert 'covseg.reports.pictures.panels' not in sys.modules; warm_pictures().join(); "
            "import matplotlib.figure, skimage.transform; from covseg.reports.pictures import panels; "
            "assert callable(skimage.transform.resize) and hasattr(matplotlib.figure, 'Figure'); "
            "print(panels.resize is skimage.transform.resize)")
    assert python_output(code).strip() == "True"


def test_pictures_drawn_in_threads_at_once_equal_those_drawn_alone():
    """Figures are drawn in worker threads (one volume's pictures while another is written): no shared state."""
    from concurrent.futures import ThreadPoolExecutor

    hu, marker = _asymmetric()
    alone = [montage_png(hu, marker, SPACING, title=f"v{k}") for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda k: montage_png(hu, marker, SPACING, title=f"v{k}"), range(4)))
    assert together == alone


def _disc_volume(n: int = 512, nz: int = 12, spacing=(0.7, 0.7, 5.0), ends: int = 0):
    """Lung-grey slices of ``n`` x ``n`` pixels with one disc of infection away from the orientation letters, on
    every slice but the ``ends`` first and last (for the reformats: an edge of the volume counts as inside)."""
    hu = np.full((nz, n, n), -800.0, np.float32)
    yy, xx = np.mgrid[:n, :n]
    infection = np.zeros(hu.shape, np.uint8)
    infection[ends:nz - ends, (yy - 0.3 * n) ** 2 + (xx - 0.3 * n) ** 2 < (0.12 * n) ** 2] = 1
    return hu, infection, spacing


def _red_pieces(png: bytes, foot_px: int) -> int:
    """8-connected pieces of infection red in a picture, its colour key (the bottom ``foot_px`` rows) left out."""
    from scipy import ndimage

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red = np.abs(rgb - np.array(INFECTION_COLOUR)).sum(axis=2) < 60
    red[-foot_px:] = False
    return ndimage.label(red, structure=np.ones((3, 3)))[1]


@pytest.mark.parametrize("dpi", [100, 50])
def test_montage_contours_are_not_broken_by_shrinking_the_panel(dpi):
    """Each montage panel is drawn at the pixels it is shown on. A 512-pixel slice used to be drawn at 256 pixels
    and shown on 224 (112 at dpi 50) by nearest-neighbour resampling, which dropped every 8th row and column: one
    disc's outline came out as 13-26 pieces per panel (chest-2slice's lower-lobe contours in dashes)."""
    hu, infection, spacing = _disc_volume()
    assert _red_pieces(montage_png(hu, infection, spacing, n=4, dpi=dpi), foot_px=dpi * 3 // 10) == 4



def test_the_heading_of_a_one_column_montage_stays_inside_the_picture():
    """A single-slice scan's montage is one panel wide (2.4 inches); its heading ran off both edges ('le  axial,
    lung window L -600 W 150'). It is now broken between words to the figure's width."""
    hu, marker = _asymmetric()
    png = montage_png(hu[15:16], marker[15:16], SPACING, n=12, title="a_volume_name_of_some_length", dpi=100)
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    text_rows = np.flatnonzero((grey[:, 4:-4] > 128).any(axis=1))
    heading = grey[:text_rows[0] + 60]  # the heading's first lines, above the panel
    assert heading[:, :3].max() < 60 and heading[:, -3:].max() < 60


def test_the_star_is_explained_only_where_a_panel_has_one(monkeypatch):
    """A montage without slices picked for their infection (no infection, or a single slice) said what '*' means
    though no title had one."""
    figures = _capture_figures(monkeypatch)
    hu, marker = _asymmetric()
    montage_png(hu, np.zeros_like(marker), SPACING, n=4, dpi=30)
    montage_png(hu, marker, SPACING, n=4, dpi=30)
    empty, found = (fig._suptitle.get_text() for fig in figures)
    assert "*" not in empty and "* = most infected" in found.replace("\n", " ")


def test_activation_montage_contour_and_crop_are_drawn_at_the_tiles_size():
    """A 512-pixel view on a 240-pixel tile: the infection contour and the crop outline used to be drawn 1 pixel
    wide on the view and shrunk bilinearly with it, a faint pink ring (no pixel of the key's red left); they are
    now drawn on the tile, in their colours, closed."""
    from scipy import ndimage

    from covseg.reports.activation_montage import CROP_OUTLINE, ActivationPanel, activation_montage_png

    n = 512
    image = np.full((n, n), 0.2, np.float32)
    yy, xx = np.mgrid[:n, :n]
    mask = (yy - 200) ** 2 + (xx - 180) ** 2 < 60 ** 2
    heat = np.where((yy > 64) & (yy < 448) & (xx > 64) & (xx < 448), yy / n, np.nan).astype(np.float32)
    panel = ActivationPanel(3, 0.9, image, heat, mask, (65, 448, 65, 448))
    sheet = np.asarray(Image.open(io.BytesIO(activation_montage_png([panel], height=240, columns=1))).convert("RGB"))
    left, right = sheet[18:18 + 240, :240], sheet[18:18 + 240, 244:244 + 240]
    red = np.all(left == np.array(INFECTION_COLOUR, np.uint8), axis=2)
    assert red.sum() > 100 and ndimage.label(red, structure=np.ones((3, 3)))[1] == 1
    blue = np.all(right == np.array(CROP_OUTLINE, np.uint8), axis=2)
    assert ndimage.label(blue, structure=np.ones((3, 3)))[1] == 1 and blue.sum() > 4 * 150


def _longest_run(rgb: np.ndarray, colour) -> int:
    """The longest horizontal run of pixels of exactly ``colour``."""
    hit = np.all(rgb == np.array(colour, np.uint8), axis=2).astype(np.int8)
    best = 0
    for row in hit:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row, [0]])))
        if edges.size:
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


@pytest.mark.parametrize("n, mm", [(512, 0.7), (64, 4.0)])
def test_montage_and_slice_overlay_carry_a_scale_bar_of_their_scale(n, mm):
    """No picture had a scale: a 64-pixel scan of 4 mm pixels and a 512-pixel scan of 0.7 mm pixels filled their
    panels alike. Each axial panel now has a bar (5 cm here) whose length in pixels is 5 cm at the panel's scale."""
    from covseg.reports.pictures.pil_marks import LETTER_COLOUR
    from covseg.reports.pictures.scale import scale_bar_mm
    from covseg.reports.pictures.slice_overlay import slice_overlay

    hu = np.full((2, n, n), -800.0, np.float32)
    infection = np.zeros(hu.shape, np.uint8)
    spacing = (mm, mm, 5.0)
    assert scale_bar_mm(n * mm) == 50
    sheet = np.asarray(Image.open(io.BytesIO(montage_png(hu, infection, spacing, n=2, dpi=100))).convert("RGB"))
    panel_px = 224  # a montage panel is 2.24 inches wide
    assert abs(_longest_run(sheet, LETTER_COLOUR) - 50 / (n * mm) * panel_px) <= 2
    overlay = slice_overlay(hu, infection, spacing, 0)
    shown_mm_per_px = n * mm / overlay.shape[1]
    assert abs(_longest_run(overlay, LETTER_COLOUR) - 50 / shown_mm_per_px) <= 2


@pytest.mark.parametrize("n, mm", [(400, 0.7), (100, 3.0)])
def test_activation_montage_carries_a_scale_bar_of_its_scale(n, mm):
    """The activation montage had no scale (audit of 2026-12-07): its CT half now has a bar whose length in pixels
    is its length in mm at the tile's scale (a 240-pixel tile of an n-pixel view of ``mm`` pixels); none without
    the pixel size."""
    from covseg.reports.activation_montage import ActivationPanel, activation_montage_png
    from covseg.reports.pictures.pil_marks import LETTER_COLOUR
    from covseg.reports.pictures.scale import scale_bar_mm

    image = np.full((n, n), 0.2, np.float32)
    heat = np.full((n, n), np.nan, np.float32)
    panel = ActivationPanel(0, 0.9, image, heat, None, (0, n, 0, n), (mm, mm))
    sheet = np.asarray(Image.open(io.BytesIO(activation_montage_png([panel], height=240, columns=1))).convert("RGB"))
    left, right = sheet[18:18 + 240, :240], sheet[18:18 + 240, 244:244 + 240]
    bar_mm = scale_bar_mm(n * mm)
    assert abs(_longest_run(left, LETTER_COLOUR) - bar_mm / (n * mm / 240)) <= 2
    assert _longest_run(right, LETTER_COLOUR) < 20  # the map's half: letters only
    bare = ActivationPanel(0, 0.9, image, heat, None, (0, n, 0, n))
    sheet = np.asarray(Image.open(io.BytesIO(activation_montage_png([bare], height=240, columns=1))).convert("RGB"))
    assert _longest_run(sheet[18:18 + 240, :240], LETTER_COLOUR) < 20


def test_reformat_scale_bars_follow_each_planes_spacing():
    """Coronal and sagittal are equally high, so at one scale: with 1 x 2 mm pixels (200 columns, 100 rows, both
    200 mm) both bars are 5 cm and equally long, though the planes have 200 and 100 pixels across."""
    from covseg.reports.pictures.pil_marks import LETTER_COLOUR

    hu = np.full((40, 100, 200), -800.0, np.float32)
    sheet = np.asarray(Image.open(io.BytesIO(reformats_png(hu, np.zeros(hu.shape, np.uint8), (1.0, 2.0, 5.0))))
                       .convert("RGB"))
    half = sheet.shape[1] // 2
    coronal, sagittal = _longest_run(sheet[:, :half], LETTER_COLOUR), _longest_run(sheet[:, half:], LETTER_COLOUR)
    assert coronal > 30 and abs(coronal - sagittal) <= 1


def test_reformat_titles_say_where_the_plane_lies(monkeypatch):
    """'coronal y=33' and 'sagittal x=43' did not say what y and x count: the titles now give the range and where
    0 lies."""
    figures = _capture_figures(monkeypatch)
    hu, marker = _asymmetric()
    reformats_png(hu, marker, SPACING, dpi=30)
    titles = [ax.get_title() for ax in figures[0].axes]
    assert titles == ["coronal y=3 of 0-39 (0 = most anterior)", "sagittal x=3 of 0-39 (0 = patient's right)"]


def test_the_infection_curve_gives_the_slice_index_along_its_top(monkeypatch):
    """The curve counted mm from the most inferior slice while the montage names slices by z: a peak at 100 mm
    had to be divided by the slice spacing to be found. The top edge now gives z (4 mm slices: 100 mm = z 25)."""
    from covseg.reports.curves import infection_curve_png
    from covseg.reports.pictures import agg

    figures = []
    real = agg.agg_figure
    monkeypatch.setattr(agg, "agg_figure", lambda size: figures.append(real(size)) or figures[-1])
    rows = [{"slice": z, "infection_px": z % 7, "lung_px": 100} for z in range(80)]
    infection_curve_png(rows, (1.0, 1.0, 4.0))
    fig = figures[0]
    tops = [a for a in fig.axes[0].child_axes if a.get_xlabel() == "slice z"]
    assert len(tops) == 1
    mm_lo, mm_hi = fig.axes[0].get_xlim()
    assert np.allclose(tops[0].get_xlim(), (mm_lo / 4.0, mm_hi / 4.0))
    figures.clear()
    infection_curve_png(rows[:20], (1.0, 1.0, 2.0))  # 20 slices: ticks at whole slices, not 2.5, 7.5
    top = next(a for a in figures[0].axes[0].child_axes if a.get_xlabel() == "slice z")
    assert all(float(t).is_integer() for t in top.get_xticks())


def test_the_key_says_when_a_class_was_found_nowhere(monkeypatch):
    """A volume without infection (or a multi-class one without consolidation) had a key to a colour drawn
    nowhere; the entry now says 'none found'."""
    figures = _capture_figures(monkeypatch)
    hu, marker = _asymmetric()
    montage_png(hu, np.zeros_like(marker), SPACING, n=4, dpi=30)
    reformats_png(hu, marker, SPACING, dpi=30)
    montage_png(hu, marker, SPACING, classes=marker, n=4, dpi=30)  # ground glass only
    keys = [[t.get_text() for t in fig.texts if t.get_text().startswith("\u25a0")] for fig in figures]
    assert keys == [["\u25a0 infection: none found"], ["\u25a0 infection"],
                    ["\u25a0 ground-glass opacity", "\u25a0 consolidation: none found"]]


def test_the_lung_axis_of_a_scan_without_lung_is_not_a_scale_of_hundredths(monkeypatch):
    """A scan without lung (the abdominal DICOM series) had a lung axis from 0 to 0.05 cm², ticks 0.00-0.04."""
    from covseg.reports.curves import infection_curve_png
    from covseg.reports.pictures import agg

    figures = []
    real = agg.agg_figure
    monkeypatch.setattr(agg, "agg_figure", lambda size: figures.append(real(size)) or figures[-1])
    infection_curve_png([{"slice": z, "infection_px": 0, "lung_px": 0} for z in range(20)], (1.0, 1.0, 2.0))
    lung_axis = next(a for a in figures[0].axes if a.get_ylabel() == "lung cm\u00b2")
    assert lung_axis.get_ylim() == (0.0, 1.0)


MACHADO = {  # Machado, Oliveira & Fernandes 2009, severity 1.0, on linear RGB
    "protan": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                        [-0.003882, -0.048116, 1.051998]]),
    "deutan": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                        [-0.011820, 0.042940, 0.968881]]),
    "normal": np.eye(3),
}


def _luminance(rgb: np.ndarray, vision: str) -> np.ndarray:
    """WCAG relative luminance of ``rgb`` as a reader of ``vision`` sees it (simulated)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.clip(linear @ MACHADO[vision].T, 0.0, 1.0) @ np.array([0.2126, 0.7152, 0.0722])


def _contrast_beside(rgb: np.ndarray, mask: np.ndarray, colour, vision: str) -> float:
    """Median over the contour pixels of ``colour`` of the WCAG contrast ratio between the pixel and the mean of its
    4-neighbours outside ``mask`` (what is drawn just outside the lesion: the CT, or the contour's casing)."""
    lum = _luminance(rgb, vision)
    line = np.all(rgb == np.array(colour, np.uint8), axis=2) & mask
    total, count = np.zeros(lum.shape), np.zeros(lum.shape)
    for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
        outside = ~np.roll(mask, shift, axis)
        total += np.where(outside, np.roll(lum, shift, axis), 0.0)
        count += outside
    beside = line & (count > 0)
    assert beside.sum() > 20
    a, b = lum[beside], total[beside] / count[beside]
    return float(np.median((np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)))


@pytest.mark.parametrize("vision", ["protan", "deutan", "normal"])
def test_contours_stand_out_by_luminance_for_colour_blind_readers(vision):
    """A red (255, 40, 40) outline on ground glass in the lung window had 1.3:1 luminance contrast to the lung beside
    it for a red-blind (protan) reader (2.4:1 deutan, 2.0:1 normal vision), magenta 2.0:1 (protan): seen by
    luminance the outline vanished. Each contour now has a black casing outside it, so that the line stands out from
    what is beside it by at least WCAG 2.1's 3:1 for graphical objects (SC 1.4.11), whatever the reader's colour
    vision, in the montage's and overlays' panels and in the activation montage's contour half."""
    n = 192
    hu = np.full((1, n, n), -850.0, np.float32)  # aerated lung
    yy, xx = np.mgrid[:n, :n]
    ggo = (yy - 60) ** 2 + (xx - 60) ** 2 < 30 ** 2
    cons = (yy - 130) ** 2 + (xx - 128) ** 2 < 28 ** 2
    hu[0][ggo], hu[0][cons] = -500.0, -100.0
    binary = (ggo | cons)[None].astype(np.uint8)
    classes = (ggo + 2 * cons)[None].astype(np.uint8)
    spacing = (1.0, 1.0, 5.0)
    for size in (n, 2 * n):  # 1-pixel lines, and 2-pixel lines on a panel of 320 pixels or more
        k = size // n
        panel = axial_panel(hu, binary, spacing, 0, max_px=size)
        assert panel.shape[:2] == (size, size)
        big = np.repeat(np.repeat(binary[0], k, 0), k, 1) > 0
        assert _contrast_beside(panel, big, INFECTION_COLOUR, vision) >= 3.0
        panel = axial_panel(hu, binary, spacing, 0, classes, max_px=size)
        labels = np.repeat(np.repeat(classes[0], k, 0), k, 1)
        for value, colour in CLASS_COLOURS.items():
            assert _contrast_beside(panel, labels == value, colour, vision) >= 3.0
    grey = (hu[0] + 1350.0) / 1500.0
    left = activation_beside_mask(grey, np.zeros_like(grey), binary[0])[:, :n]
    assert _contrast_beside(left, binary[0] > 0, INFECTION_COLOUR, vision) >= 3.0


@pytest.mark.parametrize("vision", ["protan", "deutan", "normal"])
def test_the_boundary_between_two_classes_is_cased(vision):
    """Where consolidation (magenta) met ground glass (yellow) their two lines touched uncased, 2.0-2.5:1 apart by
    luminance under simulation (chest-cip64, docs/benchmarks.md). A black casing now runs between them: the two
    colours never touch, each line stands out from what is drawn beside it toward the other class by at least 3:1,
    with 1- and 2-pixel lines, and no region loses its colour (a 1-pixel rim of ground glass round a consolidation
    stays yellow, the casing on the consolidation's side)."""
    n = 160
    hu = np.full((1, n, n), -850.0, np.float32)
    yy, xx = np.mgrid[:n, :n]
    ggo = ((yy - 80) ** 2 + (xx - 70) ** 2 < 50 ** 2) | ((yy - 22) ** 2 + (xx - 140) ** 2 < 13 ** 2)
    cons = ((yy - 80) ** 2 + (xx - 60) ** 2 < 20 ** 2) | ((yy - 80) ** 2 + (xx - 118) ** 2 < 16 ** 2)  # inside, astride
    cons |= (yy - 22) ** 2 + (xx - 140) ** 2 < 12 ** 2  # inside a rim of ground glass
    hu[0][ggo], hu[0][cons] = -500.0, -100.0
    classes = np.where(cons, 2, ggo.astype(np.uint8))[None].astype(np.uint8)
    steps = ((0, 1), (0, -1), (1, 1), (1, -1))
    for size in (n, 2 * n):  # 1-pixel lines, and 2-pixel lines on a panel of 320 pixels or more
        k = size // n
        panel = axial_panel(hu, classes > 0, (1.0, 1.0, 5.0), 0, classes, max_px=size)
        plain = axial_panel(hu, np.zeros_like(classes), (1.0, 1.0, 5.0), 0, max_px=size)
        assert panel.shape[:2] == (size, size)
        labels = np.repeat(np.repeat(classes[0], k, 0), k, 1)
        lines = {v: np.all(panel == np.array(c, np.uint8), axis=2) & (labels == v) for v, c in CLASS_COLOURS.items()}
        assert not any((np.roll(lines[1], s, a) & lines[2]).any() for a, s in steps)
        for value, line in lines.items():
            regions, count = ndimage.label(labels == value)
            assert count >= 2 and set(np.unique(regions[line])) == set(range(1, count + 1))
        lum = _luminance(panel, vision)
        between = (labels > 0) & np.any(panel != plain, axis=2)
        for value, line in lines.items():
            near = ndimage.binary_dilation((labels > 0) & (labels != value), iterations=2) & line
            where = between & ~line
            total = sum(np.where(np.roll(where, s, a), np.roll(lum, s, a), 0.0) for a, s in steps)
            count = sum(np.roll(where, s, a).astype(int) for a, s in steps)
            at = near & (count > 0)
            assert at.sum() > 20
            drawn, side = lum[at], total[at] / count[at]
            assert float(((np.maximum(drawn, side) + 0.05) / (np.minimum(drawn, side) + 0.05)).min()) >= 3.0
