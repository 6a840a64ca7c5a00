"""The fdatasync latency histogram of the service's /metrics (Prometheus exposition)."""

from __future__ import annotations

import pytest

from vantio_appliance._internal.histogram import Histogram


def _parse(lines: list[str]) -> dict[str, float]:
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    for value in (0.0002, 0.001, 0.005, 0.05, 0.05, 3.0):
        h.observe(value)
    out = _parse(h.prometheus("x_seconds"))
    assert out == {'x_seconds_bucket{le="0.001"}': 2,  # le: a value on the bound counts
                   'x_seconds_bucket{le="0.01"}': 3, 'x_seconds_bucket{le="0.1"}': 5,
                   'x_seconds_bucket{le="+Inf"}': 6,
                   "x_seconds_sum": pytest.approx(3.1062), "x_seconds_count": 6}
    assert h.prometheus("x_seconds")[0] == "# TYPE x_seconds histogram"


def test_empty_histogram_has_every_bucket() -> None:
    out = _parse(Histogram().prometheus("y"))
    assert out["y_count"] == 0 and out['y_bucket{le="+Inf"}'] == 0
    assert len([k for k in out if k.startswith("y_bucket")]) == len(Histogram().bounds) + 1


@pytest.mark.parametrize("bounds", [(0.1, 0.01), (0.1, 0.1)])
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)
