"""Enhancement: each step of the paper's step 2 on small arrays with known outputs."""

from __future__ import annotations

import numpy as np
import pytest

from chromowatch.enhance import (
    enhance_crop,
    erase_edge_objects,
    frame,
    frame_on_background,
    frame_on_white,
    gamma,
    jpeg_roundtrip,
    linear,
    normalise_mean_std,
    paint_outside_mask,
    restain,
)
from chromowatch.records import BBox, Crop
from chromowatch.settings import EnhanceSettings


def test_normalise_sets_mean_and_std() -> None:
    # mean 1, std 1 -> mean 90, std 16
    out = normalise_mean_std(np.array([[0, 2]], dtype=np.uint8), 90.0, 16.0)
    assert out.tolist() == [[74, 106]]
    assert out.dtype == np.uint8


def test_normalise_keeps_channels_together_and_clips() -> None:
    img = np.array([[[0, 0, 0], [0, 0, 0]], [[200, 200, 200], [200, 200, 200]]], np.uint8)
    out = normalise_mean_std(img, 250.0, 100.0)
    assert out[0, 0].tolist() == [150, 150, 150]
    assert out[1, 0].tolist() == [255, 255, 255]  # 350 saturates


def test_normalise_flat_image_becomes_the_mean() -> None:
    out = normalise_mean_std(np.full((3, 3), 7, np.uint8), 90.0, 16.0)
    assert (out == 90).all()


def test_linear_saturates() -> None:
    out = linear(np.array([[0, 50, 100]], np.uint8), 3.0, 30.0)
    assert out.tolist() == [[30, 180, 255]]


def test_gamma_three() -> None:
    out = gamma(np.array([[0, 128, 255]], np.uint8), 3.0)
    # (128/255)^3 * 255 = 32.25
    assert out.tolist() == [[0, 32, 255]]


def test_gamma_one_is_identity() -> None:
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (gamma(img, 1.0) == img).all()


def test_erase_edge_objects_removes_small_edge_pieces_only() -> None:
    img = np.full((10, 10), 255, np.uint8)
    img[0:2, 0:2] = 0  # 4 px at the corner: under 8% of 100 px -> erased
    img[4:7, 4:7] = 0  # in the middle: kept whatever its size
    img[0:3, 6:10] = 0  # 12 px at the edge: not small -> kept
    out = erase_edge_objects(np.repeat(img[:, :, None], 3, axis=2), 0.08)
    grey = out[:, :, 0]
    assert (grey[0:2, 0:2] == 255).all()
    assert (grey[4:7, 4:7] == 0).all()
    assert (grey[0:3, 6:10] == 0).all()


def test_erase_edge_objects_leaves_a_flat_image() -> None:
    img = np.full((5, 5, 3), 255, np.uint8)
    assert (erase_edge_objects(img, 0.08) == 255).all()


def test_paint_outside_mask_uses_the_background_level() -> None:
    img = np.full((7, 7), 100, np.uint8)
    img[3, 3] = 10  # the object
    img[0, 6] = 20  # a neighbour's tip
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    out = paint_outside_mask(img, mask, margin=1)
    assert out[3, 3] == 10
    assert out[0, 6] == 100
    with pytest.raises(ValueError):
        paint_outside_mask(img, mask[:3], margin=1)


def _rod_crop(with_neighbour: bool) -> Crop:
    rgb = np.full((40, 30, 3), (100, 98, 100), np.uint8)
    rgb[8:32, 12:18] = (70, 30, 90)  # a purple rod
    mask = np.zeros((40, 30), bool)
    mask[8:32, 12:18] = True
    if with_neighbour:
        rgb[0:6, 0:5] = (70, 30, 90)  # a neighbour's arm in the corner
    return Crop(index=0, bbox=BBox(0, 0, 30, 40), rgb=rgb, mask=mask)


AS_CUT = EnhanceSettings(frame_margin=None, jpeg_quality=None)  # the paper's framing, no JPEG


def test_enhance_crop_white_background_dark_object_no_neighbour() -> None:
    out = enhance_crop(_rod_crop(with_neighbour=True), AS_CUT)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert (out[0:6, 0:5] == 255).all()  # the neighbour is gone
    assert (out[35:, :] == 255).all()  # glass is white
    assert out[20, 14].mean() < 200  # the chromosome stays dark


def test_enhance_crop_without_mask_erases_the_small_edge_piece() -> None:
    crop = _rod_crop(with_neighbour=True)
    bare = Crop(index=0, bbox=crop.bbox, rgb=crop.rgb)
    out = enhance_crop(bare, AS_CUT)
    assert (out[0:6, 0:5] == 255).all()  # 30 px < 8% of 1200 px, touching the edge
    assert out[20, 14].mean() < 200


def test_restain_keeps_darkness_and_sets_the_hue() -> None:
    img = np.full((10, 10, 3), 100, np.uint8)
    img[0, 0] = (56, 35, 80)  # bluish purple: 44, 65, 20 darker than the glass, 43 on average
    out = restain(img, (1.0, 1.0, 1.0))
    assert out[0, 0].tolist() == [57, 57, 57]
    assert (out[5, 5] == 100).all()  # glass stays glass
    tinted = restain(img, (1.0, 2.0, 0.0))  # normalised to mean 1: 1, 2, 0
    assert tinted[0, 0].tolist() == [57, 14, 100]


def test_enhance_crop_without_stain_is_the_papers_step() -> None:
    crop = _rod_crop(with_neighbour=False)
    settings = EnhanceSettings(stain=None, frame_margin=None, jpeg_quality=None)
    expected = erase_edge_objects(
        gamma(linear(normalise_mean_std(crop.rgb, 90.0, 16.0), 3.0, 30.0), 3.0), 0.08
    )
    assert (enhance_crop(crop, settings) == expected).all()


# -- the published crops' framing and JPEG (crop style, issue 17) ------------------------------


def test_frame_sets_the_mean_margin_and_keeps_the_offsets() -> None:
    img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    centred = frame(img, (3, 3, 7, 7), 0.5, 0)  # box 4 x 4, margins 3 -> 0.5 * 4 = 2 px
    assert (centred == img[1:9, 1:9]).all()
    # off-centre (margins 1, 3, 5, 3 px): every side 1 px less, the chromosome stays left
    assert (frame(img, (1, 3, 5, 7), 0.5, 0) == img[1:9, 1:9]).all()  # left 0, right 4
    wide = frame(img, (0, 3, 4, 5), 1.5, 0)  # margins 0, 3, 6, 5 -> +2.5: 2, 6, 8, 8 px
    assert wide.shape == (16, 14)
    assert (wide[:, :2] == 0).all()  # beyond the image: fill
    assert wide[6, 2] == img[3, 0] and wide[7, 5] == img[4, 3]
    assert frame(img, (0, 0, 10, 10), 0.0, 0).tolist() == img.tolist()


def test_frame_on_background_widens_with_the_crops_own_glass() -> None:
    crop = _rod_crop(with_neighbour=False)  # object 24 x 6 px at rows 8..31, cols 12..17
    out = frame_on_background(crop.rgb, crop.mask, 0.25)  # margins 12, 8, 12, 8 -> mean 6
    assert out.shape == (32, 22, 3)
    assert (out[0, 0] == crop.rgb[0, 0]).all()  # glass, from the crop's own background
    assert (out[4:28, 8:14] == crop.rgb[8:32, 12:18]).all()


def test_enhanced_crop_has_the_published_margin_on_white() -> None:
    crop = _rod_crop(with_neighbour=True)
    out = enhance_crop(crop, EnhanceSettings(jpeg_quality=None))
    grey = out.mean(axis=2)
    ys, xs = np.nonzero(grey < 225)
    long_side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    margins = [xs.min(), ys.min(), out.shape[1] - 1 - xs.max(), out.shape[0] - 1 - ys.max()]
    assert abs(np.mean(margins) - 0.16 * long_side) <= 1
    assert (out[0] == 255).all() and (out[:, 0] == 255).all()  # the neighbour stayed away
    assert frame_on_white(out, 0.16).shape == out.shape  # framing twice changes nothing


def test_framing_makes_the_chromosome_as_dark_as_with_the_published_margin() -> None:
    # With the crop's own glass around it, the mean/std step sees a share of background like
    # the published crops' and the chromosome comes out darker than when cut tight.
    crop = _rod_crop(with_neighbour=False)
    tight = Crop(index=0, bbox=crop.bbox, rgb=crop.rgb[6:34, 10:20], mask=crop.mask[6:34, 10:20])
    as_cut = enhance_crop(tight, AS_CUT)
    framed = enhance_crop(tight, EnhanceSettings(jpeg_quality=None))
    assert framed.mean(axis=2).min() < as_cut.mean(axis=2).min() - 10


def test_jpeg_roundtrip_adds_small_noise_only() -> None:
    rng = np.random.default_rng(0)
    img = np.full((32, 32, 3), 255, np.uint8)
    img[8:24, 12:20] = rng.integers(60, 140, size=(16, 8, 3), dtype=np.uint8)
    out = jpeg_roundtrip(img, 95)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - img).mean() < 6
