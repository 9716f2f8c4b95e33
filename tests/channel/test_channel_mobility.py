"""Mobility: a contract over the registry, plus per-model checks and trace files."""

import numpy as np
import pytest

from channel.mobility import (
    MOBILITY_MODELS,
    ConstantVelocity,
    GaussMarkov,
    RandomDirection,
    RandomWaypoint,
    Static,
    TraceFormatError,
    TraceReplay,
    make_mobility,
)

BOUNDS = (-100.0, 100.0, -50.0, 50.0)
N = 40


def start(seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-100, 100, N), rng.uniform(-50, 50, N)], axis=1)


def trace_model():
    rng = np.random.default_rng(9)
    times = [np.cumsum(rng.uniform(1, 5, 30)) for _ in range(N)]
    xys = [np.stack([rng.uniform(-100, 100, 30), rng.uniform(-50, 50, 30)], axis=1) for _ in range(N)]
    return TraceReplay(times, xys, bounds_m=BOUNDS)


FACTORIES = {
    "static": lambda seed: Static(start(), BOUNDS),
    "random_waypoint": lambda seed: RandomWaypoint(
        start(), BOUNDS, (1.0, 3.0), (0.0, 4.0), rng=np.random.default_rng(seed)
    ),
    "random_direction": lambda seed: RandomDirection(
        start(), BOUNDS, (1.0, 3.0), (5.0, 20.0), (0.0, 2.0), rng=np.random.default_rng(seed)
    ),
    "gauss_markov": lambda seed: GaussMarkov(start(), BOUNDS, 5.0, 0.8, 0.5, rng=np.random.default_rng(seed)),
    "constant_velocity": lambda seed: ConstantVelocity(
        [-90, -40], [90, 40], np.linspace(1, 30, N), offset_m=np.linspace(0, 50, N), bounds_m=BOUNDS
    ),
    "trace": lambda seed: trace_model(),
}
RANDOM = {"random_waypoint", "random_direction", "gauss_markov"}


def test_every_registered_model_has_a_contract_factory():
    assert set(FACTORIES) == set(MOBILITY_MODELS)


@pytest.mark.parametrize("name", sorted(MOBILITY_MODELS))
def test_contract(name):
    times = np.random.default_rng(1).uniform(0, 600, 25)
    m = FACTORIES[name](11)
    x0, x1, y0, y1 = m.bounds_m
    shuffled = {t: m.state(t) for t in times}  # random order, backwards included
    fresh = FACTORIES[name](11)
    for t in np.sort(times):
        p, v = fresh.state(t)
        assert p.shape == (N, 2) and v.shape == (N, 2)
        assert np.array_equal(p, shuffled[t][0]) and np.array_equal(v, shuffled[t][1])
        eps = 1e-9
        assert np.all((p[:, 0] >= x0 - eps) & (p[:, 0] <= x1 + eps) & (p[:, 1] >= y0 - eps) & (p[:, 1] <= y1 + eps))
        assert np.all(np.isfinite(fresh.speeds_mps(t)))
    # reset replays
    m.reset()
    assert np.array_equal(m.positions_m(times[0]), shuffled[times[0]][0])
    if name in RANDOM:
        other = FACTORIES[name](12)
        assert not np.array_equal(other.positions_m(300.0), m.positions_m(300.0))


@pytest.mark.parametrize("name", sorted(MOBILITY_MODELS))
def test_velocity_is_the_derivative_of_position(name):
    m = FACTORIES[name](3)
    dt = 1e-4
    ok = 0
    for t in (7.3, 55.1, 201.7):
        p0, v = m.state(t)
        p1 = m.positions_m(t + dt)
        fd = (p1 - p0) / dt
        same_leg = np.all(np.abs(fd - v) < 1e-3, axis=1)  # a waypoint/wall inside (t, t+dt) is rare
        ok += same_leg.sum()
    assert ok >= 0.95 * 3 * N


def test_random_waypoint_speeds_in_range_or_paused():
    m = FACTORIES["random_waypoint"](4)
    s = np.concatenate([m.speeds_mps(t) for t in np.linspace(0, 1000, 200)])
    moving = s > 0
    assert moving.mean() > 0.5
    assert s[moving].min() >= 1.0 - 1e-9 and s[moving].max() <= 3.0 + 1e-9


def test_random_direction_modes():
    m = FACTORIES["random_direction"](5)
    s = np.concatenate([m.speeds_mps(t) for t in np.linspace(0, 500, 100)])
    assert s[s > 0].min() >= 1.0 - 1e-9 and s.max() <= 3.0 + 1e-9
    b = RandomDirection(start(), BOUNDS, (2.0, 2.0), pause_s=(1.0, 1.0), mode="border", rng=np.random.default_rng(5))
    b.positions_m(400.0)
    ends = b._xy[:, 1 : b.n_waypoints : 2]  # arrival points are on the border
    on = (
        np.isclose(ends[..., 0], -100)
        | np.isclose(ends[..., 0], 100)
        | np.isclose(ends[..., 1], -50)
        | np.isclose(ends[..., 1], 50)
    )
    assert on.all()


def test_gauss_markov_constant_velocity_limit_and_reflection():
    m = GaussMarkov(
        np.zeros((1, 2)),
        BOUNDS,
        10.0,
        1.0,
        1.0,
        rng=np.random.default_rng(0),
        speed_std_mps=0.0,
        direction_std_rad=0.0,
        mean_direction_rad=0.0,
    )
    assert m.positions_m(5.0).tolist() == [[50.0, 0.0]]
    assert m.positions_m(12.0).tolist() == [[80.0, 0.0]]  # 120 m reflects off x = 100
    assert m.velocities_mps(12.0).tolist() == [[-10.0, 0.0]]


def test_constant_velocity_bounce_and_wrap():
    b = ConstantVelocity([0, 0], [100, 0], 10.0, n_ue=1)
    assert b.positions_m(3.0).tolist() == [[30.0, 0.0]]
    assert b.positions_m(13.0).tolist() == [[70.0, 0.0]] and b.velocities_mps(13.0).tolist() == [[-10.0, 0.0]]
    w = ConstantVelocity([0, 0], [100, 0], 10.0, n_ue=1, mode="wrap")
    assert w.positions_m(13.0).tolist() == [[30.0, 0.0]] and w.velocities_mps(13.0).tolist() == [[10.0, 0.0]]
    with pytest.raises(ValueError, match=r"client counts of ConstantVelocity disagree"):
        ConstantVelocity([0, 0], [1, 0], [1.0, 2.0], n_ue=3)


def test_forget_before_keeps_answers_and_rejects_the_past():
    m = FACTORIES["random_waypoint"](6)
    want = m.positions_m(800.0)
    k = m.n_waypoints
    m.forget_before(700.0)
    assert m.n_waypoints < k
    assert np.array_equal(m.positions_m(800.0), want)
    with pytest.raises(ValueError, match=r"'t_s' parameter of RandomWaypoint must be a finite time >= 700 s"):
        m.positions_m(100.0)


def test_parameter_errors():
    with pytest.raises(
        ValueError, match=r"'speed_mps' parameter of RandomWaypoint must be a \(low, high\) pair with high >= low > 0"
    ):
        RandomWaypoint(start(), BOUNDS, (0.0, 1.0), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"'start_xy_m' parameter of GaussMarkov must lie inside bounds_m"):
        GaussMarkov(start() + 1000, BOUNDS, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"'kind' parameter of make_mobility must be one of"):
        make_mobility("levy_walk")


# -- traces ------------------------------------------------------------------------------


def test_trace_interpolation_and_holding():
    m = TraceReplay([[10.0, 20.0, 40.0], [0.0, 5.0]], [[[0, 0], [10, 0], [10, 20]], [[5, 5], [5, 5]]])
    p, v = m.state(15.0)
    assert p.tolist() == [[5.0, 0.0], [5.0, 5.0]] and v.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert m.positions_m(30.0)[0].tolist() == [10.0, 10.0]
    assert m.state(2.0)[0][0].tolist() == [0.0, 0.0] and m.state(2.0)[1][0].tolist() == [0.0, 0.0]  # before first
    assert m.state(99.0)[0][0].tolist() == [10.0, 20.0] and m.speeds_mps(99.0).tolist() == [0.0, 0.0]  # after last


def test_trace_csv_multi_client(tmp_path):
    f = tmp_path / "trace.csv"
    f.write_text("t,client,x,y\n0,7,0,0\n0,3,1,1\n10,7,100,0\n10,3,1,11\n5,3,1,6\n")
    m = TraceReplay.from_csv(f)
    assert m.client_ids == [3, 7]
    assert m.positions_m(2.5).tolist() == [[1.0, 3.5], [25.0, 0.0]]
    assert make_mobility("trace", path=str(f)).n_ue == 2


def test_trace_csv_per_client_files(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("t,x,y\n0,0,0\n4,4,0\n")
    b.write_text("x,y,t\n9,9,1\n")
    m = TraceReplay.from_csv([a, b])
    assert m.positions_m(1.0).tolist() == [[1.0, 0.0], [9.0, 9.0]]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"the file is empty"),
        ("t,x\n0,1\n", r"line 1: the header must be t,client,x,y or t,x,y \(any order\). Got t,x instead"),
        ("t,x,y\n0,1,2\n1,abc,2\n", r"line 3: column 'x' must be a number. Got 'abc' instead"),
        ("t,x,y\n0,1,2\n1,2\n", r"line 3: expected 3 fields \(t,x,y\). Got 2 instead"),
        ("t,x,y\n0,1,2\n0,3,4\n", r"two samples at t=0 \(lines 2 and 3\)"),
        ("t,x,y\n0,nan,2\n", r"line 2: column 'x' must be finite"),
        ("t,x,y\n", r"no samples after the header"),
        ("t,client,x,y\n0,,1,2\n", r"line 2: column 'client' is empty"),
    ],
)
def test_trace_malformed_files(tmp_path, text, match):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(TraceFormatError, match=match):
        TraceReplay.from_csv(f)


def test_trace_missing_file(tmp_path):
    with pytest.raises(TraceFormatError, match=r"no such trace file"):
        TraceReplay.from_csv(tmp_path / "nope.csv")


def test_random_models_need_a_generator():
    with pytest.raises(
        TypeError, match=r"'rng' parameter of RandomWaypoint must be a numpy.random.Generator. Got NoneType"
    ):
        RandomWaypoint(start(), BOUNDS, (1.0, 2.0))
    # rng may be passed in the documented position
    m = GaussMarkov(start(), BOUNDS, 1.0, 0.5, 1.0, np.random.default_rng(0))
    assert m.positions_m(3.0).shape == (N, 2)


@pytest.mark.parametrize("name", sorted(MOBILITY_MODELS))
def test_positions_at_many_times_equal_state_of_each(name):
    m = FACTORIES[name](4)
    ref = FACTORIES[name](4)
    idx = np.array([m.n_ue - 1, 0, 2])
    times = np.array([0.0, 0.7, 13.0, 13.05, 250.0])
    got = m.positions_at(times, idx)
    assert got.shape == (5, 3, 2)
    for w, t in enumerate(times):
        assert np.array_equal(got[w], ref.state_of(float(t), idx)[0])
