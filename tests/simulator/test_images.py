"""Live-view snapshots: the right size and format, reproducible, and visibly sabotaged."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from tests.simulator.helpers import NOW


def pixels(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    assert image.size == (768, 576)
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def sharpness(img: np.ndarray) -> float:
    grey = img.mean(axis=2)
    lap = grey[1:-1, 1:-1] * 4 - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var())


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels that differ clearly between two views."""
    return float((np.abs(a - b).mean(axis=2) > 30).mean())


def test_snapshots_are_reproducible_jpegs_that_vary_with_time(fleet):
    a = fleet.snapshot("FFC0001", NOW)
    assert a[:2] == b"\xff\xd8"
    assert a == fleet.snapshot("FFC0001", NOW)
    assert a != fleet.snapshot("FFC0001", NOW + timedelta(seconds=7))
    assert fleet.reference("FFC0001") != fleet.reference("FFC0002")


def test_a_healthy_view_stays_close_to_its_reference(fleet):
    ref = pixels(fleet.reference("FFC0001"))
    for seconds in range(0, 50, 10):
        snap = pixels(fleet.snapshot("FFC0001", NOW + timedelta(seconds=seconds)))
        assert changed(snap, ref) < 0.15  # only people crossing differ


def test_the_open_store_has_people_in_view_and_the_night_has_none(fleet):
    ref = pixels(fleet.reference("FFC0002"))
    busy = [
        changed(pixels(fleet.snapshot("FFC0002", NOW + timedelta(seconds=s))), ref)
        for s in range(0, 300, 30)
    ]
    night = pixels(fleet.snapshot("FFC0002", NOW.replace(hour=3)))
    assert max(busy) > 0.01
    assert changed(night, ref) < 0.002


@pytest.mark.parametrize("kind", ["covered", "dark", "blurred", "moved", "obstructed"])
def test_each_live_view_fault_changes_the_view_measurably(fleet, clock, kind):
    clock.set(NOW.replace(hour=3))  # nobody in view, so only the fault differs
    ref = pixels(fleet.reference("FFC0001"))
    healthy = pixels(fleet.snapshot("FFC0001"))
    fleet.set_fault("FFC0001", kind)
    broken = pixels(fleet.snapshot("FFC0001"))
    if kind == "covered":
        assert (broken.mean(axis=2) < 60).mean() > 0.7 > (healthy.mean(axis=2) < 60).mean()
    elif kind == "dark":
        assert broken.mean() < 0.15 * ref.mean()
    elif kind == "blurred":
        assert sharpness(broken) < 0.3 * sharpness(healthy)
    elif kind == "moved":
        assert changed(broken, ref) > 0.15 > changed(healthy, ref)
    else:
        assert 0.35 < changed(broken, ref) < 0.65
    fleet.clear_fault("FFC0001", kind)
    clock.advance(timedelta(seconds=1))
    assert changed(pixels(fleet.snapshot("FFC0001")), ref) < 0.01


def test_references_are_written_for_every_counter(fleet, tmp_path):
    paths = fleet.write_references(tmp_path / "refs")
    assert sorted(paths) == ["FFC0001", "FFC0002", "FFC0003"]
    for serial, path in paths.items():
        assert path.read_bytes() == fleet.reference(serial)
        pixels(path.read_bytes())
