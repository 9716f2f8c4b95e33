"""Channel throughput: link-samples per second, RadioChannel vs a hand-tuned numpy pipeline.

A *link-sample* is one (BS, client) link evaluated for one fading block through every stage:
3-D distance, TR 38.901 UMa path loss with the LOS/NLOS rule, correlated shadowing
update, Jakes-correlated Rayleigh fading update, then per client the downlink SINR over all
19 cells (everyone transmitting) and the Shannon rate. Clients move every block (speeds
0.5–5 m/s, 10 ms blocks), so nothing can be reused between blocks except state.

Printed per client count (1e3, 1e4, 1e5 clients × 19 sites):

- ``radio``: :class:`channel.RadioChannel.gain_linear` + :func:`channel.link.downlink_sinr_linear`
  + :meth:`channel.link.RateMapper.rate_from_linear_bps`, one block per call. Its channel is
  history-free (LOS, shadowing and a 16-sinusoid fading as fields of position and time),
  which the reference (Markov updates with fresh normals, LOS drawn once) is not.
- ``reference``: the same stages written as one minimal numpy function with preallocated
  buffers and in-place operations (LOS drawn once).
- ``static``: RadioChannel with parked clients (only fading changes: a 0.5 m/s environment
  Doppler), for scale.
- ``chunked``: :meth:`channel.RadioChannel.gains_over` on whole chunks of 16 blocks (the
  simulator's path for transferring clients); the per-block ``radio`` path computes one
  block per call (each block's matrix products are still those of its whole chunk, so that
  a block asked for alone or in its chunk gives the same bits).
- the ratio radio/reference, and each pipeline against the memory-bandwidth bound:
  measured copy bandwidth ÷ bytes of array traffic per link-sample (counted from the
  passes the reference makes, listed below).

Run: ``python bench/channel_throughput.py [--clients 1000 10000 100000] [--blocks N]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
from scipy.special import j0

import channel as ch

CARRIER_HZ = 3.5e9
BLOCK_S = 0.01
BW_HZ = 20e6
P_BS_DBM = 46.0
H_BS, H_UT = 25.0, 1.5

# Array traffic per link-sample in bytes (reads + writes; float64 = 8 B, bool = 1 B), counted
# from the passes over [n_bs, n_ue] arrays the reference makes each block (Reference.step
# below). RadioChannel's history-free channel makes other passes (field bases of 16
# sinusoids per client, matrix products per chunk); its "/bound" column uses the same byte
# count, as a yardstick only. A unary pass costs 16 B, a binary in-place one 24 B.
TRAFFIC_BYTES = {
    "distance: 2 subtract (W), 2 square, 1 add": 8 + 16 + 8 + 16 + 24,
    "path loss: clip, +h², log, 2×(×k, +a), far mask, select, max, select": 16 * 3 + 16 * 4 + 9 + 17 + 16 * 2 + 24 + 17,
    "shadowing: normals, ρ = exp(−d/d_corr) and c = sqrt(1 − ρ²) per link, z·c, u·ρ, u + z": 8 + 16 * 5 + 24 * 3,
    "shadowing into the loss: σ·u, add": 24 * 2,
    "fading: normals (2 planes), ×σ, ×ρ, +z": 16 + 32 + 32 + 48,
    "fading power |h|²: re², im², add": 16 + 16 + 24,
    "linear gain: ×(−1/DB), exp, ×|h|²": 16 + 16 + 24,
    "SINR: one read of the gains": 8,
}
RADIO_BYTES = REFERENCE_BYTES = sum(TRAFFIC_BYTES.values())


def memory_bandwidth_gbs(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Copy bandwidth (read + write), GB/s, of np.copyto on arrays far larger than the caches."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


class Reference:
    """The same stages as RadioChannel+link, hand-written with in-place numpy on buffers."""

    def __init__(self, site_xy, xy0, speed, seed):
        n_site, n = site_xy.shape[0], xy0.shape[0]
        self.sx, self.sy = site_xy[:, :1].copy(), site_xy[:, 1:].copy()
        rng = np.random.Generator(np.random.SFC64(seed))  # the fastest normals numpy offers
        self.rng = rng
        fc = CARRIER_HZ / 1e9
        lf = 20 * math.log10(fc)
        dbp = 4 * (H_BS - 1) * (H_UT - 1) * CARRIER_HZ / 3e8
        self.dbp_sq = dbp * dbp
        self.dh_sq = (H_BS - H_UT) ** 2
        c = 1 / (2 * math.log(10))  # 10 log10 d = c·10·ln d²
        self.a1, self.k1 = 28 + lf, 22 * c
        self.a2, self.k2 = 28 + lf - 9 * math.log10(self.dbp_sq + self.dh_sq), 40 * c
        self.a3, self.k3 = 13.54 + lf, 39.08 * c
        d2 = (xy0[:, 0] - self.sx) ** 2 + (xy0[:, 1] - self.sy) ** 2
        self.los = rng.random((n_site, n)) < ch.UMa().los_probability(np.sqrt(d2), H_UT)
        self.nlos = ~self.los
        self.sigma = np.where(self.los, 4.0, 6.0)
        self.neg_inv_dc = np.where(self.los, -1 / 37.0, -1 / 50.0)  # TR 38.901 Table 7.5-6 UMa
        self.u = rng.standard_normal((n_site, n))
        self.h = rng.standard_normal((2, n_site, n)) * math.sqrt(0.5)
        self.fd = speed * CARRIER_HZ / 299_792_458.0
        shape = (n_site, n)
        self.b = [np.empty(shape) for _ in range(4)]
        self.b2 = [np.empty(shape) for _ in range(2)]
        self.z2 = np.empty((2, n_site, n))
        self.mask = np.empty(shape, dtype=bool)
        self.p_mw = 10 ** (P_BS_DBM / 10)
        self.noise_mw = 10 ** (float(ch.thermal_noise_dbm(BW_HZ, 9.0)) / 10)
        self.serving = None
        self.prev = xy0.copy()

    def step(self, xy):
        d2, x, pl, t = self.b
        np.subtract(xy[:, 0], self.sx, out=d2)
        np.square(d2, out=d2)
        np.subtract(xy[:, 1], self.sy, out=t)
        np.square(t, out=t)
        d2 += t
        # path loss (UMa, clip d2D >= 10 m, LOS breakpoint, NLOS max rule)
        np.maximum(d2, 100.0, out=x)
        x += self.dh_sq
        np.log(x, out=x)
        np.multiply(x, self.k1, out=pl)
        pl += self.a1
        np.greater(d2, self.dbp_sq, out=self.mask)
        np.multiply(x, self.k2, out=t)
        t += self.a2
        np.copyto(pl, t, where=self.mask)
        np.multiply(x, self.k3, out=t)
        t += self.a3
        np.maximum(t, pl, out=t)
        np.copyto(pl, t, where=self.nlos)
        # shadowing (Gudmundson, d_corr per link: LOS 37 m, NLOS 50 m)
        disp = np.hypot(xy[:, 0] - self.prev[:, 0], xy[:, 1] - self.prev[:, 1])
        self.prev = xy.copy()
        rho, c = self.b2
        np.multiply(self.neg_inv_dc, disp, out=rho)
        np.exp(rho, out=rho)
        np.multiply(rho, rho, out=c)
        np.subtract(1.0, c, out=c)
        np.sqrt(c, out=c)
        self.rng.standard_normal(out=x)
        x *= c
        self.u *= rho
        self.u += x
        np.multiply(self.u, self.sigma, out=t)
        pl += t
        # fading (Jakes-correlated Rayleigh)
        r = j0(2 * np.pi * self.fd * BLOCK_S)
        self.rng.standard_normal(out=self.z2)
        self.z2 *= np.sqrt(0.5 * (1 - r * r))
        self.h *= r
        self.h += self.z2
        np.multiply(self.h[0], self.h[0], out=x)
        np.multiply(self.h[1], self.h[1], out=t)
        x += t
        # linear gain, SINR, rate
        pl *= -0.1 * math.log(10)
        np.exp(pl, out=pl)
        pl *= x
        if self.serving is None:
            self.serving = np.argmax(pl, axis=0)
        cols = np.arange(pl.shape[1])
        total = self.p_mw * pl.sum(axis=0)
        sig = self.p_mw * pl[self.serving, cols]
        sinr = sig / (total - sig + self.noise_mw)
        return BW_HZ * np.log2(1 + sinr)


def scenario(n_ue: int, seed: int = 0):
    lay = ch.hex_grid(2, 500.0, height_m=H_BS)  # 19 sites, omni
    rng = np.random.default_rng(seed)
    xy = ch.drop_uniform_in_cells(rng, lay, n_ue, min_distance_m=35.0)
    ang = rng.random(n_ue) * 2 * np.pi
    speed = rng.uniform(0.5, 5.0, n_ue)
    vel = speed[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return lay, xy, vel, speed


def run_radio(n_ue, n_blocks, moving=True):
    lay, xy0, vel, speed = scenario(n_ue)
    if not moving:
        vel, speed = vel * 0.0, speed * 0.0
    ss = np.random.SeedSequence(1)
    rngs = {k: np.random.default_rng(s) for k, s in zip(("los", "shadowing", "fading"), ss.spawn(3))}
    rc = ch.RadioChannel(
        lay,
        ch.UMa(),
        CARRIER_HZ,
        H_UT,
        n_ue,
        fading={"kind": "rayleigh", "min_speed_mps": 0.5},
        rngs=rngs,
        block_s=BLOCK_S,
    )
    p_mw = float(ch.dbm_to_mw(P_BS_DBM))
    noise_mw = float(ch.dbm_to_mw(ch.thermal_noise_dbm(BW_HZ, 9.0)))
    mapper = ch.RateMapper("shannon")
    serving = None

    def block(k):
        nonlocal serving
        t = rc.block_start_s(k)
        g = rc.gain_linear(t, xy0 + vel * t, speed)
        if serving is None:
            serving = np.argmax(g, axis=0)
        sinr = ch.downlink_sinr_linear(g, p_mw, serving, noise_mw)
        return mapper.rate_from_linear_bps(sinr, BW_HZ)

    for k in range(2):  # warm-up: first block draws all state
        block(k)
    t0 = time.perf_counter()
    for k in range(2, 2 + n_blocks):
        rate = block(k)
    dt = time.perf_counter() - t0
    assert np.isfinite(rate).all()
    return lay.n_bs * n_ue * n_blocks / dt


def run_chunked(n_ue, n_blocks):
    """RadioChannel.gains_over on whole chunks of 16 blocks (what the simulator does for
    transferring clients): positions of every block, one call per chunk."""
    from channel._sos import CHUNK_BLOCKS

    lay, xy0, vel, speed = scenario(n_ue)
    ss = np.random.SeedSequence(1)
    rngs = {k: np.random.default_rng(s) for k, s in zip(("los", "shadowing", "fading"), ss.spawn(3))}
    rc = ch.RadioChannel(lay, ch.UMa(), CARRIER_HZ, H_UT, n_ue, fading={"kind": "rayleigh", "min_speed_mps": 0.5},
                         rngs=rngs, block_s=BLOCK_S)
    ids = np.arange(n_ue)
    n_chunks = max(1, n_blocks // CHUNK_BLOCKS)

    def chunk(j):
        blocks = np.arange(j * CHUNK_BLOCKS, (j + 1) * CHUNK_BLOCKS)
        xy = xy0[None] + vel[None] * (blocks * BLOCK_S)[:, None, None]
        return rc.gains_over(blocks, xy, ids)

    chunk(0)  # warm-up
    t0 = time.perf_counter()
    for j in range(1, 1 + n_chunks):
        lin, _ = chunk(j)
    dt = time.perf_counter() - t0
    assert np.isfinite(lin).all()
    return lay.n_bs * n_ue * n_chunks * CHUNK_BLOCKS / dt


def run_reference(n_ue, n_blocks):
    lay, xy0, vel, speed = scenario(n_ue)
    ref = Reference(lay.site_xy_m, xy0, speed, seed=1)
    for k in range(2):
        ref.step(xy0 + vel * (k * BLOCK_S))
    t0 = time.perf_counter()
    for k in range(2, 2 + n_blocks):
        rate = ref.step(xy0 + vel * (k * BLOCK_S))
    dt = time.perf_counter() - t0
    assert np.isfinite(rate).all()
    return lay.n_bs * n_ue * n_blocks / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--blocks", type=int, default=None, help="timed blocks per run (default: ~2e7 link-samples)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = ap.parse_args()

    bw = memory_bandwidth_gbs()
    print(
        f"fedwave channel throughput — numpy {np.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print("link-sample = one (BS, client) link through distance, UMa path loss (LOS/NLOS), shadowing update,")
    print("Jakes Rayleigh fading update, then per client the downlink SINR over 19 cells and the Shannon rate;")
    print("clients move every 10 ms block (0.5–5 m/s). Best of", args.repeats, "runs, float64, one thread.")
    print(f"memory copy bandwidth: {bw:.1f} GB/s (np.copyto of 512 MiB, read + write)")
    print(f"array traffic per link-sample of the reference pipeline: {RADIO_BYTES} B")
    for what, nbytes in TRAFFIC_BYTES.items():
        print(f"  {nbytes:>4} B  {what}")
    print(
        f"memory-bandwidth bound: {bw:.1f} GB/s / {RADIO_BYTES} B = {bw * 1e9 / RADIO_BYTES / 1e6:.1f} M link-samples/s"
    )
    print()
    hdr = (
        f"{'clients':>8} {'links':>9} {'radio M/s':>10} {'reference M/s':>14} {'ratio':>6} "
        f"{'radio/bound':>12} {'ref/bound':>10} {'static M/s':>11} {'chunked M/s':>12}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n in args.clients:
        links = 19 * n
        blocks = args.blocks or max(5, min(200, int(2e7 / links)))
        r = max(run_radio(n, blocks) for _ in range(args.repeats))
        f = max(run_reference(n, blocks) for _ in range(args.repeats))
        s = max(run_radio(n, blocks, moving=False) for _ in range(args.repeats))
        c = max(run_chunked(n, max(blocks, 32)) for _ in range(args.repeats))
        print(
            f"{n:>8} {links:>9} {r / 1e6:>10.2f} {f / 1e6:>14.2f} {r / f:>6.2f} "
            f"{r * RADIO_BYTES / (bw * 1e9):>12.1%} {f * REFERENCE_BYTES / (bw * 1e9):>10.1%} {s / 1e6:>11.2f}"
            f" {c / 1e6:>12.2f}"
        )


if __name__ == "__main__":
    main()
