"""The spread's yardstick: measured once from the units, read by the steps, never changed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chromowatch.segmentation.foreground import Scale, Unit
from chromowatch.segmentation.yardstick import Yardstick

SCALE = Scale(threshold=20.0, stroke=5.0, peak=100.0)


def _unit(area: int, thickness: float) -> Unit:
    length = area / thickness
    return Unit(1, 0, 0, 10, 10, area, 5.0, 5.0, 0.0, length, thickness, 0.5, 90.0)


def test_typical_object_is_the_median_area_without_specks() -> None:
    """Units under a stroke's square (25 px here) are specks: they do not count."""
    units = [_unit(a, 4.0) for a in (10, 24, 100, 200, 300)]
    yard = Yardstick.measure(SCALE, units)
    assert (yard.threshold, yard.stroke, yard.peak) == (20.0, 5.0, 100.0)
    assert yard.typical == 200.0
    assert yard.stroke_area == 25.0
    assert yard.thin == 0.0  # fewer than eight units: no thin mode


def test_thin_mode_only_where_thicknesses_are_bimodal() -> None:
    chromatids = [_unit(100, 3.0) for _ in range(5)]
    chromosomes = [_unit(200, 6.0) for _ in range(5)]
    bimodal = Yardstick.measure(SCALE, chromatids + chromosomes)
    assert bimodal.thin == pytest.approx(1.3 * 3.0)
    alike = Yardstick.measure(SCALE, [_unit(100, 4.0 + 0.1 * k) for k in range(10)])
    assert alike.thin == 0.0
    assert Yardstick.measure(SCALE, []).typical == 0.0


def test_remeasured_keeps_the_darkness_scale_and_counts_the_new_units() -> None:
    units = [_unit(100, 4.0) for _ in range(3)]
    yard = Yardstick.measure(SCALE, units)
    again = yard.remeasured([*units, *(_unit(a, 4.0) for a in (400, 500, 600, 700))])
    assert (again.threshold, again.stroke, again.peak) == (yard.threshold, yard.stroke, yard.peak)
    assert (yard.typical, again.typical) == (100.0, 400.0)
    assert yard.typical == 100.0  # the first value is not changed: frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        yard.typical = 1.0  # type: ignore[misc]


def test_units_measure_the_same_yardstick_in_any_order() -> None:
    rng = np.random.default_rng(3)
    units = [_unit(int(a), float(t)) for a, t in zip(rng.integers(20, 400, 30),
                                                    rng.uniform(2, 8, 30), strict=True)]
    assert Yardstick.measure(SCALE, units) == Yardstick.measure(SCALE, units[::-1])
