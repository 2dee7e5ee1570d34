"""Synthetic house sales: size, rooms, age, floor and location → price.

Each row is a home sold in one city: its floor area in square metres, rooms, age in years,
floor, latitude and longitude around the centre, and the distance to it; ``price`` (euros) is
the target. The price is built the way appraisers describe it, so models have real
non-linearity to learn:

- the price per square metre falls off with the distance to the centre (exponentially, to a
  floor price in the outskirts), and a waterfront strip on the west side sells at a premium
  (a region, not a trend: trees catch it, a linear model does not);
- larger homes cost less per square metre (price grows as area ** 0.9);
- age is U-shaped: new homes and old historic ones sell above the middle-aged;
- more rooms for the same area and higher floors (up to the tenth) add a little;
- a multiplicative noise of about 12 % stands for everything a listing does not say.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.data.schema import Column, TableSchema
from shipyard.errors import InvalidInputError

HOUSING_SCHEMA = TableSchema(
    columns=[
        Column(name="area_m2"),
        Column(name="rooms", dtype="int64"),
        Column(name="age_years"),
        Column(name="floor", dtype="int64"),
        Column(name="latitude"),
        Column(name="longitude"),
        Column(name="distance_km"),
        Column(name="price"),
    ],
    target="price",
)

#: The city centre (a Lisbon-like latitude): locations are drawn around it.
CENTRE = (38.72, -9.14)
_KM_PER_DEGREE = 111.32
#: Euros per square metre at the centre and far out; the first falls to the second over
#: this many kilometres (e-folding distance).
_CENTRE_PRICE, _OUTSKIRTS_PRICE, _FALLOFF_KM = 5200.0, 1400.0, 6.0
#: Homes at least this far west of the centre are on the waterfront, at this premium.
_WATERFRONT_KM, _WATERFRONT_PREMIUM = -7.0, 1.3
_NOISE = 0.12


def generate_housing(rows: int, *, seed: int = 0) -> pd.DataFrame:
    """Generate ``rows`` house sales from ``seed``; the same arguments give the same table."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidInputError(f"rows must be a whole number of at least 1, got {rows!r}")
    rng = np.random.default_rng(seed)
    area = np.clip(rng.lognormal(np.log(85.0), 0.4, rows), 20.0, 400.0)
    rooms = np.clip(np.rint(area / 28.0 + rng.normal(0.0, 0.7, rows)), 1, 10).astype(np.int64)
    age = np.clip(rng.gamma(2.0, 15.0, rows), 0.0, 150.0)
    floor = np.minimum(rng.geometric(0.3, rows) - 1, 30).astype(np.int64)
    east, north = rng.normal(0.0, 5.0, rows), rng.normal(0.0, 5.0, rows)
    distance = np.hypot(east, north)
    latitude = CENTRE[0] + north / _KM_PER_DEGREE
    longitude = CENTRE[1] + east / (_KM_PER_DEGREE * np.cos(np.radians(CENTRE[0])))

    per_m2 = _OUTSKIRTS_PRICE + (_CENTRE_PRICE - _OUTSKIRTS_PRICE) * np.exp(-distance / _FALLOFF_KM)
    per_m2 = per_m2 * np.where(east <= _WATERFRONT_KM, _WATERFRONT_PREMIUM, 1.0)
    size = area**0.9 * 85.0**0.1  # a home of 85 m² costs exactly per_m2 × area
    age_factor = 1.0 - 0.008 * age + 0.00006 * age**2  # lowest at ~67 years, 0.73
    rooms_factor = 1.0 + 0.03 * (rooms - area / 28.0)
    floor_factor = 1.0 + 0.012 * np.minimum(floor, 10)
    noise = rng.lognormal(0.0, _NOISE, rows)
    price = per_m2 * size * age_factor * rooms_factor * floor_factor * noise
    return pd.DataFrame(
        {
            "area_m2": np.round(area, 1),
            "rooms": rooms,
            "age_years": np.round(age, 1),
            "floor": floor,
            "latitude": np.round(latitude, 6),
            "longitude": np.round(longitude, 6),
            "distance_km": np.round(distance, 3),
            "price": np.round(price, -2),
        }
    )
