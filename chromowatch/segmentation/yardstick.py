"""The spread's yardstick: what its chromosomes look like, measured once and read by every
step that sizes a cut, a pair or a clump (`split`, `sisters`, `clumps`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from chromowatch.segmentation.foreground import Scale, Unit


@dataclass(frozen=True)
class Yardstick:
    """The darkness scale (`Scale`) and the spread's typical object, as one value.

    `typical` and `thin` are measured on a list of units: `segment` measures them on the whole
    objects and again where the steps have changed that list (`remeasured`), at the same
    points as before they were one value.
    """

    threshold: float  # darkness above background that makes a pixel an object's
    stroke: float  # typical stroke width of the objects, pixels
    peak: float  # typical darkness of chromosome cores
    typical: float  # typical object area, pixels (`typical_area`)
    thin: float  # thickness up to which an object is one chromatid; 0: no thin mode

    @classmethod
    def measure(cls, scale: Scale, units: list[Unit]) -> Yardstick:
        """The yardstick of a spread whose darkness scale is `scale` and objects `units`."""
        return cls(
            threshold=scale.threshold,
            stroke=scale.stroke,
            peak=scale.peak,
            typical=typical_area(units, scale.stroke),
            thin=thin_limit(units, scale.stroke),
        )

    def remeasured(self, units: list[Unit]) -> Yardstick:
        """The same darkness scale, the typical object measured on `units` (a changed list)."""
        return replace(
            self, typical=typical_area(units, self.stroke), thin=thin_limit(units, self.stroke)
        )

    @property
    def stroke_area(self) -> float:
        """A stroke's square: the smallest area a chromosome covers."""
        return self.stroke * self.stroke


def typical_area(units: list[Unit], stroke: float) -> float:
    """Median area of the units at least a stroke square (specks do not count)."""
    areas = [u.area for u in units if u.area >= stroke * stroke]
    return float(np.median(areas)) if areas else 0.0


def thin_limit(units: list[Unit], stroke: float) -> float:
    """Thickness up to which an object is one chromatid, when the spread shows two kinds.

    Where thicknesses are clearly bimodal (single chromatids next to whole chromosomes), the
    thin mode is the chromatids'; otherwise 0 and only the profile's flatness decides.
    """
    thick = [u.thickness for u in units if u.area >= stroke * stroke]
    if len(thick) < 8:
        return 0.0
    low, high = np.percentile(thick, [15, 85])
    return 1.3 * float(low) if high >= 1.7 * low else 0.0
