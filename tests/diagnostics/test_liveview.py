"""Live-view detection on real photographs with synthesised blockages, and its check."""

import io
import json
from datetime import timedelta
from functools import cache

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from diagnostics import liveview as lv
from diagnostics.checks.liveview import LiveView, LiveViewBlocked, Snapshot
from diagnostics.checks.liveview import judge as judge_view
from diagnostics.model import Status
from tests.diagnostics import liveview_synth as synth
from tests.diagnostics.helpers import NOW, evidence

SCENE = "camera"


@cache
def world() -> synth.World:
    return synth.World.of(SCENE)


@cache
def reference() -> lv.Reference:
    return lv.prepare_reference(synth.reference(SCENE))


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def snap(img, quality: int = 80) -> bytes:
    return synth.encode(synth.add_noise(img, rng(1), 1.5), quality)


def judge(img, quality: int = 80) -> lv.ViewResult:
    return lv.analyze(snap(img, quality), reference())


# ---- benign changes stay clear ------------------------------------------------------------


def benign_cases():
    view = world().render()
    yield "unchanged", view
    yield "people", synth.people(view, rng(1), 4, (0.08, 0.18))[0]
    yield "crowd, many and close", synth.people(view, rng(2), 10, (0.12, 0.22))[0]
    yield "40% darker", synth.lighting(view, 0.6)
    yield "40% brighter", synth.lighting(view, 1.4)
    yield "uneven light", synth.lighting(view, 0.8, tilt=0.1)
    yield "sensor noise", synth.add_noise(view, rng(3), 10)
    yield "shake 2%", world().render(shift=(0.014, 0.014))
    yield "turned 5 degrees", world().render(angle=5)
    yield "jitter 3 px", world().render(shift=(3 / 768, -2 / 576), angle=0.3)
    yield "light off over part", synth.light_patch(view, rng(13), 0.6)
    yield "sun over part", synth.light_patch(view, rng(14), 1.4)
    yield "dusk", synth.dusk(view, rng(15))
    yield "rain", synth.rain(view, rng(16))
    yield "mist", synth.haze(view, 0.15, 210.0)
    yield "night", synth.night(view, rng(17))
    yield "hard shadow", synth.hard_shadow(view, rng(18))
    jitter = world().render(shift=(6 / 768, 2 / 576), angle=0.2)
    yield "jitter and light over part", synth.light_patch(jitter, rng(19), 0.65)


@pytest.mark.parametrize(("name", "img"), list(benign_cases()), ids=lambda x: str(x)[:24])
def test_benign_changes_stay_clear(name, img):
    result = judge(img)
    assert result.verdict == "clear", (name, result.reasons, result.metrics)
    assert result.kind is None
    assert result.blocked_fraction < lv.HIDDEN_BLOCKED


def test_heavy_jpeg_stays_clear():
    result = lv.analyze(synth.encode(world().render(), 25), reference())
    assert result.verdict == "clear", result.metrics


def test_crowd_really_covers_a_lot_yet_stays_clear():
    img, coverage = synth.people(world().render(), rng(2), 10, (0.12, 0.22))
    assert coverage > 0.15  # the test means something: a large share of the view is people
    assert judge(img).verdict == "clear"


# ---- each kind of blockage is found -------------------------------------------------------


def blocked_cases():
    view = world().render()
    yield "covered", synth.cover(view, rng(4), 0.9)[0]
    yield "covered", synth.cover(view, rng(5), 1.0)[0]
    yield "dark", synth.add_noise(synth.lighting(view, 0.1), rng(6), 2)
    yield "overexposed", synth.lighting(view, 3.5)
    yield "overexposed", synth.haze(view, 0.8)
    yield "blurred", synth.blur(view, 8)
    yield "blurred", synth.haze(synth.blur(view, 7), 0.3)  # condensation
    yield "moved", world().render(shift=(0.15, 0.0))
    yield "moved", world().render(shift=(0.0, -0.12))
    yield "moved", world().render(angle=15)
    yield "moved", world().render(angle=-20)
    yield "moved", synth.World.of("coffee").render()  # another scene
    yield "obstructed", synth.obstruct(view, rng(8), 0.55, textured=True)[0]
    yield "obstructed", synth.obstruct(view, rng(9), 0.5, textured=False)[0]


@pytest.mark.parametrize(("kind", "img"), list(blocked_cases()), ids=lambda x: str(x)[:24])
def test_each_kind_is_detected(kind, img):
    result = judge(img)
    assert result.verdict == "blocked", (kind, result.metrics)
    assert result.kind == kind, (result.reasons, result.metrics)
    assert 0.0 < result.blocked_fraction <= 1.0


@pytest.mark.parametrize("seed", [21, 23, 24, 25])
def test_a_plain_board_over_most_of_the_view_is_an_obstruction_not_a_cover(seed):
    """A plain object in the scene is in focus (sharp outline); a cover on the lens is not."""
    img, coverage = synth.obstruct(world().render(), rng(seed), 0.65, textured=False)
    assert coverage >= 0.55
    result = judge(img)
    assert result.kind == "obstructed", (result.reasons, result.metrics)
    soft = judge(synth.cover(world().render(), rng(seed), 0.65)[0])
    assert soft.kind == "covered", (soft.reasons, soft.metrics)


def test_blocked_fraction_follows_the_obstruction():
    img, coverage = synth.obstruct(world().render(), rng(11), 0.6, textured=True)
    result = judge(img)
    assert result.blocked
    assert abs(result.blocked_fraction - coverage) < 0.15


def test_small_obstruction_is_clear_but_reported():
    img, _ = synth.obstruct(world().render(), rng(12), 0.22, textured=True)
    result = judge(img)
    assert result.verdict == "clear"
    assert 0.1 < result.blocked_fraction < lv.HIDDEN_BLOCKED


# ---- textured and plain scenes ------------------------------------------------------------


@cache
def scene_reference(scene: str) -> lv.Reference:
    return lv.prepare_reference(synth.reference(scene))


@pytest.mark.parametrize("scene", ["hubble_deep_field", "grass", "aero"])
@pytest.mark.parametrize("pixels", [(6, 1.5), (2.5, -6), (-5, 3.5)])
def test_a_jitter_over_fine_texture_hides_nothing(scene, pixels):
    """Whole-pixel alignment leaves half a pixel (a quarter-size pixel is 4 of the snapshot's),
    which decorrelates a star field or grass: the structure is compared after that fraction
    is undone as well, so a jitter of a few pixels hides next to nothing."""
    jittered = synth.World.of(scene).render(shift=(pixels[0] / 768, pixels[1] / 576))
    result = lv.analyze(snap(jittered), scene_reference(scene))
    assert result.verdict == "clear", (result.reasons, result.metrics)
    assert result.metrics["hidden_fraction"] < 0.1, result.metrics


@pytest.mark.parametrize("scene", ["grass", "gravel", "aero"])
def test_overexposure_that_clips_every_bright_pixel_is_measured_in_full(scene):
    """x2.6 clips the bright pixels of every tile: the tiles' plain brightness ratios read
    about 2, under the 2.1 that is blocked. The pixels left unclipped show the real gain."""
    result = lv.analyze(
        snap(synth.lighting(synth.World.of(scene).render(), 2.6)), scene_reference(scene)
    )
    assert result.kind == "overexposed", (result.reasons, result.metrics)
    assert result.metrics["gain"] > lv.BRIGHTER_BLOCKED


@pytest.mark.parametrize("tone", [0.8, 1.0, 1.2])
def test_a_flat_cover_the_tone_of_a_night_sky_is_covered(tone):
    """Over rocket's night sky a flat cover of about the sky's tone changes no flat tile:
    only the little structure the view had is gone, with the layout, into a featureless
    picture. That is a cover, and no object in the scene (there is no outline to judge)."""
    view = np.asarray(synth.World.of("rocket").render(), dtype=np.float32)
    flat = np.broadcast_to(view.reshape(-1, 3).mean(axis=0) * tone, view.shape)
    result = lv.analyze(snap(Image.fromarray(flat.astype(np.uint8))), scene_reference("rocket"))
    assert result.kind == "covered", (result.reasons, result.metrics)
    clear = lv.analyze(snap(synth.World.of("rocket").render()), scene_reference("rocket"))
    assert clear.verdict == "clear", clear.metrics  # the same scene, uncovered, is clear


def test_a_soft_partial_cover_on_a_night_sky_is_found():
    view = synth.World.of("rocket").render()
    img, coverage = synth.cover(view, rng(4), 0.9)
    assert coverage > 0.6
    result = lv.analyze(snap(img), scene_reference("rocket"))
    assert result.kind == "covered", (result.reasons, result.metrics)


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_a_plain_panel_of_the_sky_s_grey_level_is_told_by_its_colour(seed):
    """An olive panel of the same luma as rocket's blue night sky changes no grey level the
    sky had; its colour does change, and the detector compares the flat tiles' colour too."""
    view = synth.World.of("rocket").render()
    a = np.asarray(view, dtype=np.float32)
    mask = synth._soft(synth._shape_mask(rng(seed), 0.5, edge=True), 1.0)
    luma = (a * np.array([0.299, 0.587, 0.114])).sum(axis=2)
    g = float((luma * mask[..., 0]).sum() / mask.sum())
    olive = np.array([g + 30.0, g, g - 78.7])  # 0.299*30 - 0.114*78.7 = 0: the same luma
    covered = synth.coverage(mask)
    result = lv.analyze(snap(synth._img(a * (1 - mask) + olive * mask)), scene_reference("rocket"))
    assert result.kind == "obstructed", (result.reasons, result.metrics)
    assert abs(result.blocked_fraction - covered) < 0.1


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a * np.array([1.1, 1.0, 0.8]),  # warm light: the white balance moved
        lambda a: a * np.array([0.85, 0.95, 1.15]),  # cold light
        lambda a: (a - 128) * 1.35 + 128,  # more contrast: colours look more saturated
        lambda a: 255 * (a / 255) ** 0.7,  # a brighter tone curve
    ],
    ids=["warm", "cold", "contrast", "gamma"],
)
def test_colours_that_shift_together_or_saturate_stay_clear(change):
    """What the camera or the light does to every colour at once is not an object: the white
    balance is measured on the surviving structure, and a tone curve changes saturation,
    not hue."""
    a = np.asarray(synth.World.of("rocket").render(), dtype=np.float32)
    result = lv.analyze(snap(synth._img(change(a))), scene_reference("rocket"))
    assert result.verdict == "clear", (result.reasons, result.metrics)
    assert result.metrics["hidden_fraction"] < 0.2, result.metrics


def test_chroma_tiles_are_the_tiles_mean_colour():
    cbcr = rng(3).integers(0, 256, (144, 192, 2)).astype(np.uint8)
    plain = cbcr.astype(np.float64).reshape(18, 8, 24, 8, 2).mean(axis=(1, 3)) - 128
    assert np.allclose(lv._chroma_tiles(cbcr, None), plain, atol=1e-3)


def test_a_fraction_of_a_pixel_shift_samples_between_the_pixels():
    y, x = np.mgrid[0:40, 0:60].astype(np.float32)

    def wave(dx: float, dy: float) -> np.ndarray:
        return 100 + 50 * np.sin(0.3 * (x + dx)) * np.cos(0.2 * (y + dy))

    moved = lv._subshift(wave(0, 0), 0.5, -0.3)
    inner = (slice(3, -3), slice(3, -3))  # the edges are repeated, not known
    assert np.abs(moved[inner] - wave(0.5, -0.3)[inner]).max() < 0.5
    assert np.abs(wave(0, 0)[inner] - wave(0.5, -0.3)[inner]).max() > 5  # it did move
    assert np.array_equal(lv._subshift(wave(0, 0), 0.0, 0.0), wave(0, 0))


# ---- inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"not an image at all", None])
def test_unreadable_image_raises_a_clear_error(data):
    if data is None:
        data = synth.reference(SCENE)[:2000]  # a truncated JPEG
    with pytest.raises(lv.ImageError) as err:
        lv.load_image(data)
    assert "image" in str(err.value)
    with pytest.raises(ValueError):  # ImageError is a ValueError for callers that expect one
        lv.analyze(data, reference())


def test_arrays_png_and_other_sizes_are_accepted():
    view = world().render()
    arr = np.asarray(view)
    assert lv.analyze(arr, reference()).verdict == "clear"
    small = synth.encode(view.resize((384, 288)))
    assert lv.analyze(small, reference()).verdict == "clear"
    assert lv.load_image(synth.encode(view)).shape == (144, 192)


def test_result_json_has_the_documented_fields():
    data = judge(world().render()).to_json()
    json.dumps(data)  # plain JSON: no numpy types leak out
    assert set(data) >= {"verdict", "kind", "blocked_fraction", "metrics", "reasons"}
    assert data["verdict"] == "clear" and data["kind"] is None
    assert all(isinstance(v, float) for v in data["metrics"].values())


# ---- frozen -------------------------------------------------------------------------------


def fingerprints(frozen: bool, n: int = 4) -> list[np.ndarray]:
    view = world().render()
    frame = snap(view)
    datas = (
        [frame] * n
        if frozen
        else [synth.encode(synth.add_noise(view, rng(i), 2)) for i in range(n)]
    )
    return [lv.analyze(d, reference()).fingerprint for d in datas]


def test_frozen_needs_identical_frames_and_expected_traffic():
    assert lv.frozen(fingerprints(True), expected_traffic=True)
    assert not lv.frozen(fingerprints(True), expected_traffic=False)
    assert not lv.frozen(fingerprints(False), expected_traffic=True)
    assert not lv.frozen(fingerprints(True)[:1], expected_traffic=True)


QUALITIES = (95, 40, 70, 15, 88)


def test_a_frozen_frame_re_encoded_at_any_quality_is_frozen():
    raw = synth.add_noise(world().render(), rng(20), 2)
    again = [synth.encode(raw, q) for q in QUALITIES]
    assert len(set(again)) == len(again)  # every snapshot's bytes differ
    assert lv.frozen(again, expected_traffic=True)
    assert not lv.frozen(again, expected_traffic=False)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_a_still_live_view_is_not_frozen_whatever_the_quality(sigma):
    view = world().render()
    live = [
        synth.encode(synth.add_noise(view, rng(30 + i), sigma), q)
        for i, q in enumerate((90, 60, 75, 45))
    ]
    assert not lv.frozen(live, expected_traffic=True)
    people = [
        synth.encode(
            synth.add_noise(synth.people(view, rng(40 + i), 1, (0.1, 0.12))[0], rng(i), 1), 80
        )
        for i in range(3)
    ]
    assert not lv.frozen(people, expected_traffic=True)


def test_frozen_png_snapshots_need_the_same_pixels():
    view = world().render()
    frame = synth.png(synth.add_noise(view, rng(2), 2))
    assert lv.frozen([frame] * 3, expected_traffic=True)
    other = synth.png(synth.add_noise(view, rng(3), 2))
    assert not lv.frozen([frame, other, frame], expected_traffic=True)


# ---- learned reference --------------------------------------------------------------------


def test_learned_reference_never_folds_a_blocked_snapshot():
    view = world().render()
    covered = snap(synth.cover(view, rng(4), 0.9)[0])
    obstructed = snap(synth.obstruct(view, rng(8), 0.55, textured=True)[0])
    learner = lv.LearnedReference(needed=3)
    assert learner.offer(snap(view)) is None
    first = lv.prepare_reference(snap(view))
    assert not learner.may_fold(lv.load_image(covered), first)
    assert learner.offer(covered) is None  # a group of its own, never part of the view's
    assert not learner.may_fold(lv.load_image(obstructed), first)
    assert learner.offer(snap(synth.people(view, rng(1), 2, (0.08, 0.12))[0])) is None
    assert learner.progress == (2, 3)
    assert learner.offer(snap(synth.lighting(view, 0.9))) is None
    assert learner.reference is not None
    assert learner.offer(snap(view)).verdict == "clear"
    assert learner.offer(obstructed).verdict == "blocked"
    assert learner.offer(covered).kind == "covered"


def test_unusable_snapshots_are_not_learned():
    view = world().render()
    assert lv.usable_as_reference(snap(view)) is None
    assert "dark" in lv.usable_as_reference(snap(synth.lighting(view, 0.1)))
    assert "washed" in lv.usable_as_reference(snap(synth.lighting(view, 4.0)))
    assert "structure" in lv.usable_as_reference(snap(synth.cover(view, rng(5), 1.0)[0]))
    learner = lv.LearnedReference(needed=1)
    assert learner.offer(snap(synth.lighting(view, 0.1))) is None
    assert learner.reference is None and learner.progress == (0, 1)


def test_the_first_view_seen_often_enough_is_learned():
    view = world().render()
    other = synth.World.of("coffee").render()
    learner = lv.LearnedReference(needed=2)
    learner.offer(snap(view))
    learner.offer(snap(other))  # disagrees: a group of its own
    assert learner.progress == (1, 2) and learner.reference is None
    learner.offer(snap(other))
    assert learner.reference is not None
    assert learner.offer(snap(other)).verdict == "clear"
    assert learner.offer(snap(view)).verdict == "blocked"


# ---- the check ----------------------------------------------------------------------------


@cache
def snaps() -> dict[str, bytes]:
    """Snapshots as the counter sends them: the check decodes and judges them itself."""
    view = world().render()
    return {
        "clear": snap(view),
        "covered": snap(synth.cover(view, rng(4), 0.9)[0]),
        "obstructed": snap(synth.obstruct(view, rng(8), 0.55, textured=True)[0]),
        "dark": snap(synth.lighting(view, 0.05)),
    }


def live_view(datas, now=NOW, step=timedelta(minutes=10), **kw) -> LiveView:
    n = len(datas)
    shots = tuple(Snapshot(now - step * (n - 1 - i), d, f"{i}.jpg") for i, d in enumerate(datas))
    return LiveView(shots, kw.pop("reference", reference()), **kw)


def run_check(kinds, *, source="configured", step=timedelta(minutes=10), options=None):
    view = live_view([snaps()[k] for k in kinds], step=step, source=source)
    check = LiveViewBlocked(options)
    [finding] = check.run(evidence((), NOW, extra={"liveview": view}))
    return finding


def test_no_snapshot_yet_is_skipped():
    assert run_check([]).status is Status.SKIP
    learning = LiveView((Snapshot(NOW, snaps()["clear"]),), None, "learning")
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": learning}))
    assert f.status is Status.SKIP and "1 of 3" in f.summary


def test_clear_view_is_ok():
    f = run_check(["clear", "clear"])
    assert f.status is Status.OK and f.code == "clear"


def test_a_single_odd_snapshot_raises_no_finding():
    f = run_check(["clear", "clear", "covered"])
    assert f.status is Status.OK and not f.problem
    assert f.code == "unconfirmed" and "awaiting confirmation" in f.summary


def test_confirmed_blockage_fails_with_the_most_common_kind():
    f = run_check(["clear", "obstructed", "covered", "covered"])
    assert f.status is Status.FAIL and f.code == "covered"
    assert f.evidence["snapshots"] == 3 and f.evidence["kind"] == "covered"
    assert 0.4 <= f.evidence["blocked_fraction"] <= 1.0
    assert f.remediation


def test_a_clear_snapshot_resets_confirmation():
    f = run_check(["covered", "covered", "clear", "covered"])
    assert f.status is Status.OK and f.evidence["snapshots"] == 1


def test_confirmation_count_is_configurable():
    opts = LiveViewBlocked.Options(confirm_snapshots=1)
    assert run_check(["clear", "covered"], options=opts).status is Status.FAIL
    with pytest.raises(ValidationError):
        LiveViewBlocked.Options(confirm_snapshots=0)


def test_learned_reference_is_stated():
    f = run_check(["covered"] * 3, source="learned")
    assert f.status is Status.FAIL and "learned" in f.evidence["reference"]


def test_frozen_while_open_fails_and_not_while_closed():
    same = [snaps()["clear"]] * 4  # the very same picture, again and again
    check = LiveViewBlocked()
    [f] = check.run(evidence((), NOW, extra={"liveview": live_view(same)}))
    assert f.status is Status.FAIL and f.code == "frozen"
    night = NOW.replace(hour=23)
    [f] = check.run(evidence((), night, extra={"liveview": live_view(same, now=night)}))
    assert f.status is Status.OK and f.code == "clear"


def test_frozen_re_encoded_fails_the_check():
    raw = synth.add_noise(world().render(), rng(21), 2)
    again = [synth.encode(raw, q) for q in QUALITIES[:4]]
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": live_view(again)}))
    assert f.status is Status.FAIL and f.code == "frozen"
    live = [
        synth.encode(synth.add_noise(world().render(), rng(i), 2), q)
        for i, q in enumerate(QUALITIES[:4])
    ]
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": live_view(live)}))
    assert f.code != "frozen"


def test_dark_while_closed_is_not_a_fault():
    night = NOW.replace(hour=23)
    dark = [snaps()["dark"]] * 3
    [f] = LiveViewBlocked().run(evidence((), night, extra={"liveview": live_view(dark, night)}))
    assert f.status is Status.OK and f.code == "dark_closed"
    at_once = live_view(dark, step=timedelta(0))
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": at_once}))
    assert f.status is Status.FAIL and f.code == "dark"


def test_the_check_learns_the_view_and_names_the_snapshots_it_learned_from():
    view = world().render()
    blocked = snaps()["covered"]
    datas = [snap(view), blocked, snap(synth.lighting(view, 0.9)), snap(view)]
    learning = live_view(datas, reference=None, source="learning")
    judged = judge_view(learning)
    assert judged.source == "learned" and len(judged.samples) == 4
    used = {s.at for s in learning.snapshots if s.data is not blocked}
    assert set(judged.learned_from) == used  # never the blocked snapshot
    # the view the agent saves, from those snapshots, is the one the check judged against
    saved = lv.median_view([s.data for s in learning.snapshots if s.at in used])
    assert judge_view(live_view(datas, reference=lv.prepare_reference(saved))).samples == (
        judged.samples
    )
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": learning}))
    assert f.evidence["learned_from"] == [at.isoformat() for at in judged.learned_from]
    assert "learned" in f.evidence["reference"]
    # with a reference there is nothing to learn and nothing for the agent to save
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": live_view(datas)}))
    assert "learned_from" not in f.evidence


def bomb() -> bytes:
    """A PNG of a few kilobytes that claims 64 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header():
    data = bomb()
    assert len(data) < 100_000
    with pytest.raises(lv.ImageError, match="too large"):
        lv.load_image(data)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard stays in force too


def test_unreadable_snapshots_and_reference_notes_reach_the_finding():
    datas = [snaps()["clear"], b"not an image", bomb(), snaps()["clear"]]
    view = live_view(datas, notes={"reference_error": "the tuning image is gone"})
    [f] = LiveViewBlocked().run(evidence((), NOW, extra={"liveview": view}))
    assert f.status is Status.OK and f.code == "clear"
    assert f.evidence["reference_error"] == "the tuning image is gone"
    assert [u.split(":")[0] for u in f.evidence["unreadable"]] == ["1.jpg", "2.jpg"]
    assert "too large" in f.evidence["unreadable"][1]


def test_check_metadata():
    assert LiveViewBlocked.id == "counter.liveview.blocked"
    assert LiveViewBlocked.applies_to == "counter"
    with pytest.raises(ValidationError):
        LiveViewBlocked.Options(unknown=1)
