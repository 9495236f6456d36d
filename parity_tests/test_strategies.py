"""The parity strategies' palette of static settings covers every value of every dimension, evenly."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given

from strategies import ALL_STRATEGIES, CHUNK_PERIODS, FRICTIONS, PALETTE_SIZE, covering_palette, static_settings


def test_palette_covers_every_value_evenly():
    dims = (("n", (2, 3, 4, 5)), ("strategy", ALL_STRATEGIES), ("chunk_period", CHUNK_PERIODS),
            ("friction", FRICTIONS))
    palette = covering_palette(dims)
    assert len(palette) == PALETTE_SIZE
    for name, values in dims:
        counts = Counter(entry[name] for entry in palette)
        assert set(counts) == set(values), name
        # each value floor(size / len) or ceil(size / len) times
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_palette_is_the_same_for_the_same_dimensions_and_differs_otherwise():
    a = covering_palette((("n", (2, 3)), ("friction", FRICTIONS)))
    b = covering_palette((("n", (2, 3)), ("friction", FRICTIONS)))
    c = covering_palette((("n", (2, 3, 4)), ("friction", FRICTIONS)))
    assert a == b and a != c


def test_palette_refuses_a_size_below_a_dimension():
    with pytest.raises(ValueError, match="smaller than a dimension"):
        covering_palette((("strategy", ALL_STRATEGIES),), size=4)


@given(settings=static_settings(n_assets=(2,), names=("momentum",), frictions=("fee",)))
def test_static_settings_draw_from_the_palette(settings):
    assert (settings["n"], settings["strategy"], settings["friction"]) == (2, "momentum", "fee")
    assert settings["chunk_period"] in CHUNK_PERIODS
