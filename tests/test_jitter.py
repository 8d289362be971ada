"""pipeline/core/jitter.py with an injected clock: order, loss, lateness, restarts, fuzzing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.concealment import CONCEAL_FRAMES
from pipeline.core.jitter import (
    Conceal,
    Frame,
    JitterBuffer,
    JitterStats,
    Nothing,
    Output,
    Recover,
)
from pipeline.core.seqnum import MASK, seq_add, seq_diff
from pipeline.media.audio_format import FRAME_NS

MS = 1_000_000
T0 = 1_000_000_000_000  # an arbitrary monotonic start


def media(capture_ns: int) -> int:
    """The media timestamp (48 kHz samples) of a frame the sender captured at ``capture_ns``:
    the tests give each frame a notional capture time, the buffer sees samples."""
    return capture_ns * 48_000 // 1_000_000_000


def payload(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


@dataclass
class Sim:
    """A sender at 20 ms, a network with per-packet delays, a receiver ticking at 20 ms."""

    jb: JitterBuffer
    first_seq: int = 0
    ts0: int = T0

    def run(
        self,
        delays: Mapping[int, int | None],
        n: int,
        ticks: int,
        dup: frozenset[int] = frozenset(),
    ) -> list[Output]:
        """delays: index -> extra delay in ns (None: lost); every packet has 5 ms base delay."""
        arrivals: list[tuple[int, int]] = []
        for k in range(n):
            d = delays.get(k, 0)
            if d is None:
                continue
            t = self.ts0 + k * FRAME_NS + 5 * MS + d
            arrivals.append((t, k))
            if k in dup:
                arrivals.append((t + 3 * MS, k))
        arrivals.sort()
        out: list[Output] = []
        i = 0
        for tick in range(ticks):
            now = self.ts0 + tick * FRAME_NS + 10 * MS
            while i < len(arrivals) and arrivals[i][0] <= now:
                t, k = arrivals[i]
                seq = seq_add(self.first_seq, k)
                self.jb.push(seq, media(self.ts0 + k * FRAME_NS), payload(seq), t)
                i += 1
            out.append(self.jb.pop(now))
        return out


def played(out: list[Output]) -> list[int]:
    return [o.seq for o in out if isinstance(o, Frame)]


def kinds(out: list[Output]) -> str:
    codes = {Frame: "F", Conceal: "C", Recover: "R", Nothing: "."}
    return "".join(codes[type(o)] for o in out)


# --- ordinary streams ---------------------------------------------------------------


def test_nothing_until_watermark_then_in_order() -> None:
    jb = JitterBuffer()
    jb.push(0, media(T0), payload(0), T0)
    assert jb.pop(T0) == Nothing()
    jb.push(1, media(T0 + FRAME_NS), payload(1), T0)
    assert jb.pop(T0) == Frame(0, media(T0), payload(0))
    assert jb.pop(T0) == Frame(1, media(T0 + FRAME_NS), payload(1))


def test_in_order_stream_plays_everything_once() -> None:
    sim = Sim(JitterBuffer())
    out = sim.run({}, n=100, ticks=110)
    assert played(out) == list(range(100))
    s = sim.jb.stats
    # Then it runs dry: concealed for as long as the concealment takes to fade out.
    assert (s.played, s.concealed, s.recovered, s.late, s.lost) == (100, CONCEAL_FRAMES, 0, 0, 0)
    assert kinds(out).strip(".").startswith("F" * 100)


def test_reordered_stream_is_put_back_in_order() -> None:
    # every third packet overtaken by the next one (delayed 25 ms)
    sim = Sim(JitterBuffer())
    out = sim.run({k: 25 * MS for k in range(0, 100, 3)}, n=100, ticks=110)
    assert played(out) == list(range(100))
    assert sim.jb.stats.late == 0


def test_duplicates_dropped_and_counted() -> None:
    sim = Sim(JitterBuffer())
    out = sim.run({}, n=50, ticks=60, dup=frozenset(range(0, 50, 2)))
    assert played(out) == list(range(50))
    assert sim.jb.stats.duplicate + sim.jb.stats.late == 25


def test_single_loss_recovers_from_fec_of_next_packet() -> None:
    sim = Sim(JitterBuffer())
    out = sim.run({10: None}, n=40, ticks=40)
    rec = [o for o in out if isinstance(o, Recover)]
    assert rec == [Recover(10, payload(11))]
    assert played(out) == [k for k in range(40) if k != 10][: len(played(out))]
    s = sim.jb.stats
    assert (s.recovered, s.lost) == (1, 1)


def test_late_packet_is_concealed_then_dropped_as_late() -> None:
    sim = Sim(JitterBuffer())
    out = sim.run({10: 200 * MS}, n=40, ticks=45)
    assert 10 not in played(out)
    assert any(isinstance(o, Recover | Conceal) and o.seq == 10 for o in out)
    s = sim.jb.stats
    assert s.late == 1 and s.lost == 1
    assert s.late_percent > 0  # the late share a listener reports back to the speaker


def test_burst_loss_longer_than_the_fade_conceals_then_rebuffers() -> None:
    sim = Sim(JitterBuffer())
    out = sim.run(dict.fromkeys(range(10, 20)), n=40, ticks=45)
    assert played(out) == list(range(10)) + list(range(20, 40))
    k = kinds(out)
    assert "F" + "C" * CONCEAL_FRAMES + "." in k  # the whole fade, then buffering
    s = sim.jb.stats
    assert s.lost == 10 and s.concealed >= CONCEAL_FRAMES and s.underruns >= 1


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("k", range(1, CONCEAL_FRAMES + 1))
def test_a_burst_no_longer_than_the_fade_never_stops_playing(adaptive: bool, k: int) -> None:
    # The old buffer went back to buffering after 3 (fixed) or 5 (adaptive) dry ticks and
    # played Nothing, digital silence, until packets were held again.
    jb = JitterBuffer(watermark=1 if adaptive else 2, adaptive=adaptive)
    out = Sim(jb).run(dict.fromkeys(range(30, 30 + k)), n=60, ticks=70)
    k_out = kinds(out).strip(".")
    assert "." not in k_out[: k_out.rindex("F")]  # from the first Frame to the last
    assert jb.stats.underruns == 1  # only at the end of the stream, once it faded out
    assert set(played(out)) >= set(range(30 + k, 60))


def test_long_hole_with_later_packets_held_skips_ahead() -> None:
    jb = JitterBuffer(watermark=2, max_conceal=3)
    for seq in (0, 1, 10, 11):
        jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), T0)
    out = [jb.pop(T0) for _ in range(8)]
    assert kinds(out) == "FFCCCFFC"  # dry at the end: underrun concealment
    assert played(out) == [0, 1, 10, 11]
    assert [o.seq for o in out if isinstance(o, Conceal)] == [2, 3, 4, 12]
    assert jb.stats.lost == 8


def test_depth_is_bounded_by_dropping_the_oldest() -> None:
    jb = JitterBuffer(max_depth=10)
    for seq in range(25):
        jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), T0)
    assert jb.depth == 10 and jb.stats.overflow == 15
    first = jb.pop(T0)
    assert isinstance(first, Frame) and first.seq == 15
    jb.push(3, media(T0 + 3 * FRAME_NS), payload(3), T0)  # already dropped: late now
    assert jb.stats.late == 1


def test_sequence_restart_resets_the_buffer() -> None:
    jb = JitterBuffer()
    now = T0
    for seq in range(1000, 1010):
        jb.push(seq, media(now), payload(seq), now)
        jb.pop(now)
        now += FRAME_NS
    # reconnect: a new stream from 0, captured later
    outs = []
    for k in range(10):
        jb.push(k, media(now), payload(k), now)
        outs.append(jb.pop(now))
        now += FRAME_NS
    assert jb.stats.restarts == 1
    assert played(outs) == list(range(9))
    # a straggler of the old stream is late, not a second restart
    jb.push(1009, media(T0 + 9 * FRAME_NS), payload(1009), now)
    assert jb.stats.restarts == 1 and jb.stats.late >= 1


def test_sender_pause_resumes_without_clipping() -> None:
    # The sender numbers frames it sends: after a pause seq continues, ts jumps.
    jb = JitterBuffer()
    now = T0
    for seq in range(10):
        jb.push(seq, media(now), payload(seq), now)
        jb.pop(now)
        now += FRAME_NS
    for _ in range(20):  # 400 ms of silence: a few concealments, then Nothing
        jb.pop(now)
        now += FRAME_NS
    outs = []
    for seq in range(10, 20):
        jb.push(seq, media(now), payload(seq), now)
        outs.append(jb.pop(now))
        now += FRAME_NS
    assert played(outs) == list(range(10, 19))


def test_retired_after_silence_and_revived_by_a_new_push() -> None:
    jb = JitterBuffer(retire_after_ns=2_000_000_000)
    assert not jb.retired
    jb.push(0, media(T0), payload(0), T0)
    jb.pop(T0 + 1_000_000_000)
    assert not jb.retired
    assert jb.pop(T0 + 2_100_000_000) == Nothing()
    assert jb.retired
    jb.push(500, media(T0 + 3 * 10**9), payload(500), T0 + 3 * 10**9)
    assert not jb.retired and jb.stats.restarts == 1 and jb.depth == 1


def test_sequence_numbers_wrap() -> None:
    sim = Sim(JitterBuffer(), first_seq=MASK - 4)
    out = sim.run({6: None}, n=12, ticks=14)
    seqs = [o.seq for o in out if not isinstance(o, Nothing)]
    assert seqs[:12] == [seq_add(MASK - 4, k) for k in range(12)]
    assert seqs[5] == 0  # wrapped
    assert isinstance(out[1 + 6], Recover)


def test_loss_percent_over_the_last_ten_seconds() -> None:
    sim = Sim(JitterBuffer())
    lost = {k: None for k in range(0, 1000, 10) if k}  # 10 % loss throughout 20 s
    sim.run(lost, n=1000, ticks=1000)
    assert sim.jb.stats.loss_percent == pytest.approx(10, abs=1.5)
    sim2 = Sim(JitterBuffer())
    sim2.run({k: None for k in range(10, 500, 10)}, n=1000, ticks=1000)  # loss ended at 10 s
    assert sim2.jb.stats.loss_percent == 0
    assert sim2.jb.stats.lost == 49


def test_bad_watermark() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(watermark=0)
    with pytest.raises(ValueError):
        JitterBuffer(watermark=60, max_depth=50)


# --- any arrival order of any subset ------------------------------------------------


@given(
    first=st.one_of(st.integers(0, MASK), st.integers(MASK - 40, MASK)),
    order=st.lists(st.integers(0, 60), max_size=80),
    pops=st.lists(st.booleans(), min_size=1, max_size=200),
    watermark=st.integers(1, 4),
    max_depth=st.integers(4, 20),
)
def test_any_arrival_order_never_replays_or_goes_back(
    first: int, order: list[int], pops: list[bool], watermark: int, max_depth: int
) -> None:
    jb = JitterBuffer(watermark=watermark, max_depth=max_depth, max_conceal=2)
    now = T0
    it = iter(order)
    last: int | None = None
    for do_pop in pops:
        now += FRAME_NS // 2
        if do_pop:
            o = jb.pop(now)
            if isinstance(o, Nothing):
                continue
            if last is not None:
                assert seq_diff(o.seq, last) > 0, (last, o)
            last = o.seq
            k = seq_diff(o.seq, first)
            if isinstance(o, Frame):
                assert o.payload == payload(o.seq) and o.timestamp == media(T0 + k * FRAME_NS)
            if isinstance(o, Recover):
                assert o.next_payload == payload(seq_add(o.seq, 1))
        else:
            arrival = next(it, None)
            if arrival is None:
                continue
            seq = seq_add(first, arrival)
            jb.push(seq, media(T0 + arrival * FRAME_NS), payload(seq), now)
        assert 0 <= jb.depth <= max_depth
    s = jb.stats
    assert s.restarts == 0 and 0 <= s.loss_percent <= 100


def test_media_timestamps_across_the_u64_wrap_are_one_stream() -> None:
    jb = JitterBuffer()
    start = (1 << 64) - 5 * 960  # five frames before the wrap
    now = T0
    outs = []
    for k in range(12):
        jb.push(k, (start + k * 960) & ((1 << 64) - 1), payload(k), now)
        outs.append(jb.pop(now))
        now += FRAME_NS
    assert jb.stats.restarts == 0 and played(outs) == list(range(11))
    # A new stream whose timestamps jumped well ahead (past the wrap too) restarts.
    for k in range(3):
        jb.push(k, (start + (40 + k) * 960) & ((1 << 64) - 1), payload(k), now)
        jb.pop(now)
        now += FRAME_NS
    assert jb.stats.restarts == 1


def test_a_backlog_after_a_stall_is_discarded_back_to_the_watermark() -> None:
    """A relay frozen for seconds delivers everything at once: playout must not stay behind."""
    jb = JitterBuffer()
    now = T0
    for seq in range(10):  # normal talk
        jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), now)
        jb.pop(now)
        now += FRAME_NS
    for seq in range(10, 55):  # the stall ends: 45 packets in one burst
        jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), now)
    next_seq = 55
    depths = []
    for _ in range(150):  # three seconds of ticks, the stream going on in real time
        jb.push(next_seq, media(T0 + next_seq * FRAME_NS), payload(next_seq), now)
        next_seq += 1
        jb.pop(now)
        depths.append(jb.depth)
        now += FRAME_NS
    s = jb.stats
    assert max(depths[-50:]) <= jb.watermark + 1  # back to normal within about a second
    assert s.discarded >= 40 and s.lost == 0 and s.loss_percent == 0.0 and s.restarts == 0


def test_ordinary_jitter_never_discards() -> None:
    sim = Sim(JitterBuffer())
    rng = random.Random(7)
    sim.run({k: rng.randint(0, 50) * MS for k in range(300)}, n=300, ticks=320)
    assert sim.jb.stats.discarded == 0


# --- adaptive playout -----------------------------------------------------------------


def adaptive_run(
    arrivals: list[tuple[int, int]], ticks: int, jb: JitterBuffer | None = None
) -> tuple[JitterBuffer, list[tuple[int, Output]]]:
    """(arrival ns, k) pairs of a 20 ms sender (frame k captured at T0 + k * 20 ms); one pop
    per tick at T0 + tick * 20 ms + 10 ms. Returns the buffer and (tick, output) pairs."""
    jb = jb or JitterBuffer(watermark=1, adaptive=True)
    arrivals = sorted(arrivals)
    out: list[tuple[int, Output]] = []
    i = 0
    for tick in range(ticks):
        now = T0 + tick * FRAME_NS + 10 * MS
        while i < len(arrivals) and arrivals[i][0] <= now:
            t, k = arrivals[i]
            jb.push(k, media(T0 + k * FRAME_NS), payload(k), t)
            i += 1
        out.append((tick, jb.pop(now)))
    return jb, out


def steady(n: int, delay_ms: float = 5.0) -> list[tuple[int, int]]:
    return [(T0 + k * FRAME_NS + int(delay_ms * MS), k) for k in range(n)]


def test_adaptive_starts_on_two_evenly_spaced_packets_and_holds_a_clean_path_tight() -> None:
    jb, out = adaptive_run(steady(400), 410)
    # Packet 0 waits for packet 1 to show the path is clean (no 200 ms wait to learn it).
    first = next(t for t, o in out if isinstance(o, Frame))
    assert first == 1 and played([o for _, o in out]) == list(range(400))
    s = jb.stats
    assert s.discarded == 0
    assert s.late == 0 and s.lost == 0
    # The fastest packet's delay plus the scheduling margin: nothing for jitter (once the
    # first 3 s, which wait for the largest delay seen and 10 ms more, are over).
    assert s.target_ms == pytest.approx(jb.margin_ns / MS, abs=1)
    assert s.delay_ms <= s.target_ms + jb.hysteresis_ns / MS + 20


def jittery(n: int, sd_ms: float, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(T0 + k * FRAME_NS + int(abs(rng.gauss(0, sd_ms)) * MS), k) for k in range(n)]


def test_a_jittery_paths_first_start_waits_to_learn_it() -> None:
    # The first packets' spread shows jitter: nothing plays until 8 delays are known (or
    # 200 ms), and the target then covers the spread, where starting on the first packets
    # let the later ones come too late while the delay was still being raised.
    missed = {"learnt": 0, "hasty": 0}  # packets late, or waited for, over six paths
    for seed in range(6):
        arrivals = jittery(150, 30, seed)
        learnt, out = adaptive_run(arrivals, 170)
        assert next(t for t, o in out if isinstance(o, Frame)) >= 7
        hasty, _ = adaptive_run(arrivals, 170, JitterBuffer(watermark=1, adaptive=True,
                                                             start_wait_ns=0))  # fmt: skip
        for name, jb in (("learnt", learnt), ("hasty", hasty)):
            missed[name] += jb.stats.late + jb.stats.waited
    assert missed["learnt"] * 2 < missed["hasty"]


def test_the_head_held_while_learning_is_dropped_unless_a_spurt_began_the_stream() -> None:
    # Without a marker, the packets that waited beyond the aim while the path was learnt
    # are dropped: played, they would keep the wait as delay. A stream that began with a
    # talk spurt keeps them (its head is the sender's pre-roll; the spurt's end sheds
    # the delay for free).
    arrivals = jittery(100, 30, seed=3)
    plain, out = adaptive_run(arrivals, 120)
    assert plain.stats.discarded > 0
    assert played([o for _, o in out])[0] == plain.stats.discarded
    marked = JitterBuffer(watermark=1, adaptive=True)
    out = spurt_run(marked, [(t, k, k, k == 0) for t, k in arrivals], 120)
    assert marked.stats.discarded == 0 and played([o for _, o in out])[0] == 0


def test_a_step_down_in_delay_is_forgotten_rather_than_held_as_jitter() -> None:
    # A sender's first 50 packets stamped 40 ms early (its capture clock settling), then
    # a steady path: the 40 ms are no jitter, and the target comes down within a second
    # or so rather than decaying from 40 ms at 5 ms a second.
    arrivals = steady(50, 45.0) + steady(300, 5.0)[50:]
    jb, _ = adaptive_run(arrivals, 80)
    assert jb.stats.steps == 0 and jb.stats.target_ms > 40  # not yet: 40 packets needed
    jb, _ = adaptive_run(arrivals, 300)
    assert jb.stats.steps == 1
    assert jb.stats.target_ms < 20


def test_jitter_and_stalls_are_no_step() -> None:
    # Neither a jittery path nor one that stalls now and then (150 ms every 3 s, from 2 s
    # on) ever has 40 packets in a row all faster than everything before them.
    stalls = [(T0 + k * FRAME_NS + (150 - (k % 150 - 100) * 20) * MS if 100 <= k % 150 < 108
               else T0 + k * FRAME_NS + 5 * MS, k) for k in range(1000)]  # fmt: skip
    for arrivals in (jittery(1000, 30, seed=1), jittery(1000, 60, seed=2), stalls):
        jb, _ = adaptive_run(arrivals, 1010)
        assert jb.stats.steps == 0


def test_the_first_seconds_wait_for_the_largest_delay_seen_and_more() -> None:
    # Three packets 0, 30 and 10 ms late, then a steady path: a 97th percentile of three
    # would be their largest, and would be too little for the next ones.
    early = [(T0 + k * FRAME_NS + d * MS, k) for k, d in enumerate((0, 30, 10))]
    jb, _ = adaptive_run(early + steady(20, 0)[3:], 10)
    assert jb.stats.target_ms >= 30 + jb.early_extra_ns / MS + jb.margin_ns / MS - 1


def test_the_first_seconds_guess_gives_way_to_the_quantile_not_to_the_slow_decay() -> None:
    """A sender that stalled as it started: packet 0 on time, 1-8 in one burst 170 ms
    later, then a clean path (seen through PulseAudio on a loaded machine). The first
    seconds wait for that burst; once the window holds enough packets, the target is
    the quantile's at once, not 5 ms a second down from the guess (which held 160 ms of
    target for 30 s)."""
    arrivals = [(T0, 0), *[(T0 + 170 * MS, k) for k in range(1, 9)], *steady(400, 0)[9:]]
    guessing, _ = adaptive_run(arrivals, jb_early := JitterBuffer().early_samples - 10)
    assert guessing.stats.target_ms >= 170 + guessing.margin_ns / MS  # the largest seen
    learnt, _ = adaptive_run(arrivals, jb_early + 40)  # 1 s later: 5 ms less by the decay
    assert learnt.stats.target_ms < guessing.stats.target_ms - 50


def test_shortening_waits_for_more_excess_on_a_jittery_path() -> None:
    """The delay is left alone within a slack that grows with the path's spread (target
    above the fastest), 15..50 ms: a jittery path's target wanders and is not chased. (With
    nothing queued the delay steps down in whole frames: 25 ms too much can lose 20.)"""
    for spread_ms, excess_ms, wanted in ((0, 25, True), (40, 25, False), (80, 65, True)):
        jb = JitterBuffer(watermark=1, adaptive=True)
        h = jb.history
        h.delays.extend((T0, d * MS) for d in [0] * 200 + [spread_ms] * 20)
        h.fastest, h.target_d, h.target_at = 0, spread_ms * MS, T0
        h.ts0 = 0
        # A frame captured at 0 played at target + margin + excess.
        now = spread_ms * MS + jb.margin_ns + excess_ms * MS
        jb._steer(now, 0, 0)
        assert (jb.stretch_wanted < 0) == wanted, (spread_ms, excess_ms)


def test_the_aim_holds_for_when_a_packet_must_be_here_not_for_when_it_is_heard() -> None:
    """What is queued ahead of a frame (the time-stretcher's leftover) is heard before it,
    but the frame was taken out with it: packets are late against the deadline (now less
    the media time), so that is what the aim holds for. The queue is the delay there is
    to shed, down to the deadline; below the aim the delay grows by whole frames."""

    def steer(deadline_ms: float, queued_ms: float) -> int:
        jb = JitterBuffer(watermark=1, adaptive=True)
        h = jb.history
        h.delays.extend((T0, 0) for _ in range(200))
        h.fastest, h.target_d, h.target_at, h.ts0 = 0, 0, T0, 0
        aim = jb.margin_ns  # a clean path: the margin alone
        jb._steer(aim + int(deadline_ms * MS), int(queued_ms * 48), 0)
        return jb.stretch_wanted // 48  # ms, + lengthen, - shorten

    assert steer(0, 4) == 0  # at the aim, 4 ms queued: held (queue_slack_ns)
    assert steer(0, 18) == -18  # more: the queue goes, the deadline stays at the aim
    assert steer(-4, 18) == 2  # 4 ms short: a frame later (20 - 18 queued)
    assert steer(-4, 0) == 20  # and with nothing queued, a whole frame
    assert steer(27, 0) == -20  # 27 ms to spare: a frame less, 7 ms above the aim
    assert steer(21, 0) == 0  # 21: a frame less would leave 1, inside the guard
    assert steer(27, 12) == -32  # the queue and a frame


def test_lengthening_never_goes_into_speech() -> None:
    jb = JitterBuffer(watermark=1, adaptive=True)
    h = jb.history
    h.delays.extend((T0, 0) for _ in range(200))
    h.fastest, h.target_d, h.target_at, h.ts0 = 0, 100 * MS, T0, 0
    jb._steer(10 * MS, 0, 0)  # 90 ms below the target: packets would be late
    assert jb.stretch_wanted > 0 and not jb.stretch_urgent


def test_adaptive_target_follows_jitter_and_falls_back_slowly() -> None:
    rng = random.Random(7)
    jittery = [(T0 + k * FRAME_NS + int(abs(rng.gauss(0, 30)) * MS), k) for k in range(500)]
    calm = [(T0 + k * FRAME_NS + 5 * MS, k) for k in range(500, 1500)]
    targets: dict[int, float] = {}
    jb = JitterBuffer(watermark=1, adaptive=True)
    for chunk_end in (250, 499, 700, 1400):
        # Run up to tick chunk_end (a fresh run each time: the buffer is deterministic).
        jb, _out = adaptive_run(jittery + calm, chunk_end, JitterBuffer(watermark=1, adaptive=True))
        targets[chunk_end] = jb.stats.target_ms
    # Under 30 ms of (half-normal) jitter: a high quantile, about 2 s.d. above the fastest.
    assert 45 <= targets[499] <= 110
    assert targets[250] > 30  # learnt within the first seconds, not only at the end
    # The path calms down: the 10 s window still remembers the jitter for a while ...
    assert targets[700] >= 0.8 * targets[499]
    # ... then the target comes back down to the margin, at the decay rate, not at once.
    assert targets[1400] < 20


def test_adaptive_waits_for_a_late_packet_instead_of_throwing_it_away() -> None:
    # From packet 20 on the path takes 45 ms longer: nothing is held when 20 is due.
    arr = [(t + (45 * MS if k >= 20 else 0), k) for t, k in steady(40)]
    jb, out = adaptive_run(arr, 50)
    assert played([o for _, o in out]) == list(range(40))  # all of them, in order
    s = jb.stats
    assert s.late == 0 and s.lost == 0 and s.waited >= 1
    fixed_jb = JitterBuffer()
    fixed = Sim(fixed_jb).run({k: 45 * MS for k in range(20, 40)}, n=40, ticks=50)
    assert 20 not in played(fixed) and fixed_jb.stats.late >= 1  # the fixed buffer gives up


def test_adaptive_plays_reordered_packets_in_order() -> None:
    arr = steady(100)
    arr = [(t + (25 * MS if k % 10 == 3 else 0), k) for t, k in arr]  # overtaken by k+1
    jb, out = adaptive_run(arr, 110)
    assert played([o for _, o in out]) == list(range(100))
    assert jb.stats.lost == 0


def test_a_new_talk_spurt_starts_at_the_learned_delay() -> None:
    rng = random.Random(3)
    first = [(T0 + k * FRAME_NS + int(abs(rng.gauss(0, 20)) * MS), k) for k in range(300)]
    # A pause of 1 s (no packets: the sender stopped), then a spurt on the same clock.
    second = [(T0 + k * FRAME_NS + 5 * MS, k) for k in range(350, 400)]
    jb, out = adaptive_run(first + second, 420)
    starts = [tick for tick, o in out if isinstance(o, Frame) and o.seq == 350]
    (tick,) = starts
    # Packet 350 arrived at tick 350 (its 5 ms delay): it is held back by the target that
    # the first spurt's jitter taught (tens of ms), not played at the first tick.
    assert tick >= 351
    assert jb.stats.target_ms > 20


def test_adaptive_backlog_far_beyond_the_target_is_cut() -> None:
    # A path that stalled 2 s and then delivered everything at once.
    arr = [(T0 + max(k * FRAME_NS, 2_000 * MS) + 5 * MS, k) for k in range(400)]
    jb, _out = adaptive_run(arr, 400)
    # Two seconds came at once; the target is capped, so most of it is cut, not played late.
    assert jb.stats.discarded > 0 and jb.stats.discarded + jb.stats.overflow > 50
    assert jb.depth * FRAME_NS <= jb.max_target_ns + jb.margin_ns + FRAME_NS


def test_adaptive_loss_on_a_tight_path_costs_one_concealment_and_no_delay() -> None:
    arr = [(t, k) for t, k in steady(60) if k != 30]  # packet 30 lost
    jb, out = adaptive_run(arr, 70)
    outs = [o for _, o in out]
    assert played(outs) == [k for k in range(60) if k != 30]
    frames = [tick for tick, o in out if isinstance(o, Frame)]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    # 31 follows 29 two ticks later: one tick concealed for 30, the schedule unchanged.
    assert gaps.count(2) == 1 and set(gaps) == {1, 2}
    assert jb.stats.lost == 1 and jb.stats.waited == 0


def test_an_outage_burst_does_not_raise_the_target() -> None:
    # A clean path, then the relay freezes for 3 s and delivers all it held at once.
    normal = steady(500)
    frozen = [(T0 + 650 * FRAME_NS + 5 * MS, k) for k in range(500, 650)]
    after = [(T0 + k * FRAME_NS + 5 * MS, k) for k in range(650, 800)]
    jb, _out = adaptive_run(normal + frozen + after, 800)
    assert jb.stats.target_ms < 20  # the burst was an outage, not jitter
    assert jb.depth <= 3  # and its backlog was cut back to the target
    assert jb.stats.discarded > 0


def test_after_a_stall_longer_than_the_concealment_playing_resumes_at_the_target() -> None:
    # The sender stalls 200 ms mid-talk (a sound server's hiccup), then sends what it
    # captured meanwhile at once. The concealment fades out and the buffer runs dry;
    # played from the head of the burst, those frames would keep the stall as delay for
    # good (180 ms here: below the backlog cut). They are dropped instead.
    stall = range(300, 310)
    normal = steady(300)
    burst = [(T0 + 310 * FRAME_NS + 5 * MS, k) for k in stall]
    after = [(T0 + k * FRAME_NS + 5 * MS, k) for k in range(310, 500)]
    jb, out = adaptive_run(normal + burst + after, 500)
    delay = {o.seq: (t - o.seq) * FRAME_NS + 10 * MS for t, o in out if isinstance(o, Frame)}
    assert jb.stats.underruns == 1
    assert delay[320] <= delay[290] + FRAME_NS  # back at the target, within a frame
    assert delay[480] <= delay[290] + FRAME_NS
    assert jb.stats.discarded == len([k for k in stall if k not in delay]) >= 5
    assert list(delay) == sorted(delay)  # in order, each once


def test_adaptive_burst_of_losses_is_concealed_without_a_hole_or_added_delay() -> None:
    arr = [(t, k) for t, k in steady(60) if k not in (30, 31, 32)]
    jb, out = adaptive_run(arr, 70)
    outs = [o for tick, o in out if 25 <= tick <= 40]
    assert not any(isinstance(o, Nothing) for o in outs)  # concealed, never silence
    frames = [tick for tick, o in out if isinstance(o, Frame)]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    assert gaps.count(4) == 1 and set(gaps) == {1, 4}  # 33 plays on its own tick
    assert jb.stats.lost == 3


def test_adaptive_keeps_a_frame_of_headroom_for_fec_while_packets_get_lost() -> None:
    lost = {100, 140, 180, 220, 260}
    arr = [(t, k) for t, k in steady(300) if k not in lost]
    jb, out = adaptive_run(arr, 310)
    kinds_after = [type(o) for tick, o in out if tick > 150 and not isinstance(o, Frame)]
    # The first losses are concealed; once loss is seen, the next packet is in hand when a
    # lost one is due, and FEC rebuilds it.
    assert Recover in kinds_after
    assert jb.stats.recovered >= 2
    clean, _ = adaptive_run(steady(300), 310)
    assert jb.stats.target_ms >= clean.stats.target_ms + 19  # the frame of headroom


# --- talk spurts (SPEC.md, "Talk spurts") ---------------------------------------------


def spurt_run(
    jb: JitterBuffer, sent: list[tuple[int, int, int, bool]], ticks: int
) -> list[tuple[int, Output]]:
    """sent: (arrival ns, seq, capture index, marker); the sender numbers only what it
    sends, so seq goes on +1 across a pause while the capture index jumps."""
    sent = sorted(sent)
    out: list[tuple[int, Output]] = []
    i = 0
    for tick in range(ticks):
        now = T0 + tick * FRAME_NS + 10 * MS
        while i < len(sent) and sent[i][0] <= now:
            t, seq, k, marker = sent[i]
            jb.push(seq, media(T0 + k * FRAME_NS), payload(seq), t, marker)
            i += 1
        out.append((tick, jb.pop(now)))
    return out


def spurts(runs: list[tuple[int, int]], preroll: int = 0) -> list[tuple[int, int, int, bool]]:
    """Talk spurts of a 20 ms sender over a 5 ms path: (first capture index, frames) each;
    the first ``preroll`` frames of a spurt go out in a burst with the one after them."""
    out, seq = [], 0
    for first, n in runs:
        for j in range(n):
            k = first + j
            sent_at = first + max(j, preroll)  # a pre-rolled frame leaves with the onset one
            out.append((T0 + sent_at * FRAME_NS + 5 * MS, seq, k, j == 0))
            seq += 1
    return out


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_spurt_after_a_short_pause_plays_whole_with_no_loss_or_wait(adaptive: bool) -> None:
    # 60 ms of silence (3 frames not sent): without the marker the fixed buffer has used
    # those numbers up concealing and drops the new spurt's first three as late, and the
    # adaptive one counts the pause as a wait for them.
    jb = JitterBuffer(watermark=1 if adaptive else 2, adaptive=adaptive)
    out = spurt_run(jb, spurts([(0, 20), (23, 20)]), 60)
    assert played([o for _, o in out]) == list(range(40))
    st_ = jb.stats
    assert (st_.late, st_.lost, st_.waited, st_.loss_percent) == (0, 0, 0, 0.0)


def test_the_pause_between_spurts_is_not_loss_but_a_packet_lost_at_the_end_is() -> None:
    sent = [s for s in spurts([(0, 20), (70, 20)]) if s[1] != 19]  # the hold's last one lost
    jb = JitterBuffer(watermark=1, adaptive=True)
    out = spurt_run(jb, sent, 110)
    assert played([o for _, o in out]) == [*range(19), *range(20, 40)]
    assert jb.stats.lost == 1
    assert jb.stats.restarts == 0


def test_a_spurts_pre_roll_burst_does_not_raise_the_target() -> None:
    # Ten short spurts, each with 2 frames of pre-roll sent at once with the onset frame:
    # a tenth of all packets arrive 20-40 ms "late" on purpose. Counted as jitter they
    # would set the 97th percentile; left out, the clean 5 ms path keeps a tight target.
    runs = [(i * 40, 20) for i in range(10)]
    jb = JitterBuffer(watermark=1, adaptive=True)
    out = spurt_run(jb, spurts(runs, preroll=2), 420)
    assert len(played([o for _, o in out])) == 200
    assert jb.stats.target_ms < 12
    assert jb.stats.lost == 0


def test_a_spurt_after_an_underrun_plays_its_pre_roll_even_when_its_marker_comes_late() -> None:
    # A long spurt (a tight target) whose last packet, the flagged end, is lost: the
    # buffer conceals and runs dry (an underrun). The next spurt's pre-roll comes in a
    # burst whose marked packet is overtaken by the one after it. The pause was a
    # talker's, not a stall: the pre-roll plays, nothing is dropped.
    jb = JitterBuffer(watermark=1, adaptive=True)
    sent = [(T0 + k * FRAME_NS + 5 * MS, k, k, k == 0) for k in range(299)]
    burst = T0 + 330 * FRAME_NS + 5 * MS
    for i, seq in enumerate((301, 300, 302)):  # captured 40, 20 and 0 ms before the onset
        sent.append((burst + i * 100_000, seq, 328 + seq - 300, seq == 300))
    sent += [(T0 + (330 + j) * FRAME_NS + 5 * MS, 302 + j, 330 + j, False) for j in range(1, 20)]
    out = spurt_run(jb, sent, 400)
    assert jb.stats.underruns >= 1
    assert played([o for _, o in out]) == [*range(299), *range(300, 322)]
    assert jb.stats.discarded == 0


def test_a_marked_packet_held_behind_the_last_spurt_waits_for_its_target() -> None:
    # A jittery first spurt teaches a target of tens of ms; the next spurt follows after
    # one frame of silence while the last spurt is still held. Its first packet is not
    # played the tick after the last one, but when its own delay reaches the target.
    rng = random.Random(5)
    first = [(T0 + k * FRAME_NS + int(abs(rng.gauss(0, 20)) * MS), k, k, k == 0)
             for k in range(300)]  # fmt: skip
    second = [(T0 + k * FRAME_NS + 5 * MS, k - 1, k, k == 301) for k in range(301, 330)]
    jb = JitterBuffer(watermark=1, adaptive=True, start_wait_ns=0)  # the old first start
    out = spurt_run(jb, first + second, 360)
    last = next(t for t, o in out if isinstance(o, Frame) and o.seq == 299)
    start = next(t for t, o in out if isinstance(o, Frame) and o.seq == 300)
    assert played([o for _, o in out])[-30:] == list(range(299, 329))  # the new spurt whole
    assert start - last >= 2  # a gap of silence kept, at the boundary


@given(
    order=st.lists(st.tuples(st.integers(0, 60), st.booleans()), max_size=80),
    pops=st.lists(st.booleans(), min_size=1, max_size=200),
    adaptive=st.booleans(),
)
def test_any_markers_never_replay_or_go_back(
    order: list[tuple[int, bool]], pops: list[bool], adaptive: bool
) -> None:
    # Markers on any packet, in any arrival order: what plays still only moves forward,
    # each packet at most once, and the depth stays bounded.
    jb = JitterBuffer(watermark=1 if adaptive else 2, max_depth=20, adaptive=adaptive)
    now = T0
    it = iter(order)
    last: int | None = None
    played_seqs: set[int] = set()
    for do_pop in pops:
        now += FRAME_NS // 2
        if do_pop:
            o = jb.pop(now)
            if isinstance(o, Nothing):
                continue
            if last is not None:  # (adaptive playout's waits conceal one number again)
                assert seq_diff(o.seq, last) >= 0, (last, o)
            last = o.seq
            if isinstance(o, Frame):
                assert o.seq not in played_seqs
                assert all(seq_diff(o.seq, p) > 0 for p in played_seqs)
                played_seqs.add(o.seq)
        else:
            item = next(it, None)
            if item is None:
                continue
            k, marker = item
            jb.push(k, media(T0 + k * FRAME_NS), payload(k), now, marker)
        assert 0 <= jb.depth <= 20
    assert 0 <= jb.stats.loss_percent <= 100


# --- redundant copies (SPEC.md, "Voice body") ------------------------------------------


def push_with_copies(jb: JitterBuffer, seq: int, now: int, depth: int = 2) -> None:
    """Packet ``seq`` and, as its voice body would carry them, copies of the ``depth``
    before it (payload b"copy" + seq)."""
    jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), now)
    for back in range(depth, 0, -1):
        s = seq - back
        if s >= 0:
            jb.push_copy(s, media(T0 + s * FRAME_NS), b"copy" + payload(s), now, back)


def steady_with_copies(
    jb: JitterBuffer, n: int, lost: set[int], backs: tuple[int, ...], ticks: int
) -> list[Output]:
    """Packets 0..n-1 but ``lost``, each 5 ms on a steady path with copies of the frames
    ``backs`` before it (oldest first, payload b"copy" + seq), popped 7 ms into each tick."""
    out: list[Output] = []
    arrivals = [(T0 + k * FRAME_NS + 5 * MS, k) for k in range(n) if k not in lost]
    i = 0
    for tick in range(ticks):
        now = T0 + tick * FRAME_NS + 7 * MS
        while i < len(arrivals) and arrivals[i][0] <= now:
            t, k = arrivals[i]
            jb.push(k, media(T0 + k * FRAME_NS), payload(k), t)
            for back in (b for b in backs if k - b >= 0):
                s = k - back
                jb.push_copy(s, media(T0 + s * FRAME_NS), b"copy" + payload(s), t, back)
            i += 1
        out.append(jb.pop(now))
    return out


def test_a_copy_stands_in_for_a_missing_primary_and_counts_as_lost() -> None:
    jb = JitterBuffer(watermark=3)
    out: list[Output] = []
    for seq in range(30):
        now = T0 + seq * FRAME_NS
        if seq not in (10, 11):
            push_with_copies(jb, seq, now)
        out.append(jb.pop(now))
    frames = [o for o in out if isinstance(o, Frame)]
    assert [f.seq for f in frames] == list(range(28))
    copies = [f for f in frames if f.redundant]
    assert [(f.seq, f.payload) for f in copies] == [(s, b"copy" + payload(s)) for s in (10, 11)]
    assert copies[0].timestamp == media(T0 + 10 * FRAME_NS)
    s = jb.stats
    assert (s.recovered_red, s.lost, s.recovered, s.concealed, s.duplicate, s.late) == (
        2, 2, 0, 0, 0, 0
    )  # fmt: skip
    assert s.burst_mean == 2.0


def test_copies_of_frames_held_or_played_or_before_the_stream_are_ignored() -> None:
    jb = JitterBuffer(watermark=2)
    jb.push(5, media(T0 + 5 * FRAME_NS), payload(5), T0)
    assert not jb.push_copy(4, media(T0 + 4 * FRAME_NS), b"c", T0, 1)  # before the first packet
    jb.push(6, media(T0 + 6 * FRAME_NS), payload(6), T0)
    assert not jb.push_copy(5, media(T0 + 5 * FRAME_NS), b"c", T0, 1)  # its primary is held
    assert jb.pop(T0) == Frame(5, media(T0 + 5 * FRAME_NS), payload(5))
    assert not jb.push_copy(5, media(T0 + 5 * FRAME_NS), b"c", T0, 1)  # played already
    assert not jb.push_copy(6 - 51, 0, b"c", T0, 51)  # further back than the buffer reaches
    jb.push(8, media(T0 + 8 * FRAME_NS), payload(8), T0)
    assert jb.push_copy(7, media(T0 + 7 * FRAME_NS), b"c7", T0, 1)
    assert not jb.push_copy(7, media(T0 + 7 * FRAME_NS), b"c7", T0, 1)  # one copy is enough
    jb.push(7, media(T0 + 7 * FRAME_NS), payload(7), T0)  # the primary after all: it wins
    assert [jb.pop(T0) for _ in range(3)] == [
        Frame(s, media(T0 + s * FRAME_NS), payload(s)) for s in (6, 7, 8)
    ]
    s = jb.stats
    assert (s.duplicate, s.late, s.recovered_red, s.lost) == (0, 0, 0, 0)


def test_a_full_buffer_takes_no_copy_rather_than_drop_a_primary_for_it() -> None:
    jb = JitterBuffer(watermark=1, max_depth=4)
    for s in (1, 3, 4, 5):  # 2 missing; four held: full
        jb.push(s, media(T0 + s * FRAME_NS), payload(s), T0)
    assert not jb.push_copy(2, media(T0 + 2 * FRAME_NS), b"c2", T0, 3)
    assert jb.stats.overflow == 0
    assert jb.pop(T0) == Frame(1, media(T0 + FRAME_NS), payload(1))  # not dropped for the copy


def test_a_copy_carries_no_fec_so_a_gap_before_one_is_concealed() -> None:
    jb = JitterBuffer(watermark=1)
    jb.push(0, media(T0), payload(0), T0)
    assert isinstance(jb.pop(T0), Frame)
    jb.push(3, media(T0 + 3 * FRAME_NS), payload(3), T0)
    jb.push_copy(2, media(T0 + 2 * FRAME_NS), b"c2", T0, 1)
    assert jb.pop(T0) == Conceal(1)  # not Recover from the copy of 2
    assert jb.pop(T0) == Frame(2, media(T0 + 2 * FRAME_NS), b"c2", redundant=True)


def test_adaptive_playout_holds_what_the_copies_need_once_losses_come_in_bursts() -> None:
    """A clean, steady path with a burst of two every second: the buffer learns the
    copies go two frames back and holds that much more while losses come, so the copies
    of a burst arrive while its frames are still due (the first bursts may be waited for)."""
    jb = JitterBuffer(watermark=1, adaptive=True)
    bursts = {k for b in range(50, 500, 50) for k in (b, b + 1)}
    out = steady_with_copies(jb, 500, bursts, (2, 1), ticks=510)
    late_bursts = [k for k in bursts if k >= 200]
    rebuilt = {o.seq for o in out if isinstance(o, Frame) and o.redundant}
    assert set(late_bursts) <= rebuilt
    assert not [o for o in out[250:495] if isinstance(o, Conceal | Recover)]  # then it ends
    assert jb.stats.burst_mean == 2.0


def test_while_the_delay_climbs_for_the_copies_a_frame_in_a_hole_waits_for_its_copy() -> None:
    """Copies (2, 4, 8) back and losses that start with a burst: the buffer holds more for
    the copies from the second loss on, but the delay has not climbed yet (nothing here
    lengthens the audio). A frame missing among held ones then waits for its copy (the
    concealment stands in, a tick at a time) instead of being given up: every frame of the
    second burst plays, from its copy or FEC."""
    jb = JitterBuffer(watermark=1, adaptive=True)
    lost = {200, 201, 202, *range(260, 266)}
    out = steady_with_copies(jb, 400, lost, (8, 4, 2), ticks=420)
    frames = [o.seq for o in out if isinstance(o, Frame)]
    rebuilt = {o.seq for o in out if isinstance(o, Frame) and o.redundant}
    recovered = {o.seq for o in out if isinstance(o, Recover)}
    # The first burst came before any loss was known: its first frame was given up.
    assert 200 not in frames and {201, 202} <= rebuilt | recovered
    second = set(range(260, 266))
    assert second <= rebuilt | recovered and set(range(203, 400)) - second <= set(frames)
    assert jb.stats.waited > 0


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_spurt_its_sender_ended_ends_with_nothing_concealed(adaptive: bool) -> None:
    # Two spurts, the last packet of each flagged as its end (voice activation's hold ran
    # out): the silence after it is a pause, so nothing is concealed and no underrun is
    # counted; the next spurt plays whole. Without the flags the pause is concealed (and
    # faded) first, as a burst of loss would be.
    def run(flag: bool) -> tuple[list[Output], JitterStats]:
        jb = JitterBuffer(watermark=1 if adaptive else 2, adaptive=adaptive)
        sent = spurts([(0, 20), (40, 20)])
        outs = []
        i = 0
        for tick in range(80):
            now = T0 + tick * FRAME_NS + 10 * MS
            while i < len(sent) and sent[i][0] <= now:
                t, seq, k, marker = sent[i]
                end = flag and seq in (19, 39)
                jb.push(seq, media(T0 + k * FRAME_NS), payload(seq), t, marker, end)
                i += 1
            outs.append(jb.pop(now))
        return outs, jb.stats

    outs, st_ = run(flag=True)
    assert played(outs) == list(range(40))
    assert not any(isinstance(o, Conceal) for o in outs)
    assert (st_.concealed, st_.underruns, st_.spurt_ends, st_.lost) == (0, 0, 2, 0)
    frames = [o for o in outs if isinstance(o, Frame)]
    assert [f.seq for f in frames if f.end] == [19, 39]
    outs, st_ = run(flag=False)
    assert played(outs) == list(range(40))
    assert st_.concealed > 0 and st_.spurt_ends == 0  # the old way: a fade into the pause


def test_a_flagged_end_followed_by_a_hole_is_no_pause() -> None:
    # The end flag belongs to the frame before a pause; a hole right after it with later
    # packets held (the next spurt's marked packet lost) is concealed as a loss is.
    jb = JitterBuffer(watermark=1)
    for seq in range(5):
        jb.push(seq, media(T0 + seq * FRAME_NS), payload(seq), T0 + seq * FRAME_NS, end=seq == 4)
    jb.push(6, media(T0 + 9 * FRAME_NS), payload(6), T0 + 9 * FRAME_NS)
    outs = [jb.pop(T0 + (10 + t) * FRAME_NS) for t in range(8)]
    assert played(outs) == [0, 1, 2, 3, 4, 6]
    assert isinstance(outs[5], Recover) and outs[5].seq == 5  # rebuilt, not a pause
    assert jb.stats.spurt_ends == 0  # and 6 (no flag) fades into its silence as before


def test_the_deepest_copy_holds_its_frames_for_as_long_as_a_sender_holds_its_depth() -> None:
    """Copies 8 back, then (the sender lowered its depth) only 4 back: the frames held for
    the deepest copy stay held RED_HOLD_NS after it was last seen, not the loss window's
    10 s, so a depth that falls and rises again does not move the delay."""
    jb = JitterBuffer(watermark=1, adaptive=True)
    lost = set(range(100, 3000, 50))  # a loss a second keeps the headroom wanted
    aims = {}
    for k in range(3000):
        now = T0 + k * FRAME_NS + 5 * MS
        if k not in lost:
            jb.push(k, media(T0 + k * FRAME_NS), payload(k), now)
            for back in (8, 4, 2) if k < 500 else (4, 2):
                jb.push_copy(k - back, media(T0 + (k - back) * FRAME_NS), b"copy", now, back)
        jb.pop(now + 2 * MS)
        if k in (400, 1200, 2110):  # 8 s in, then 14 s and 32 s after the last deep copy
            aims[k] = jb._aim_for(jb.history.target_d or 0) - (jb.history.target_d or 0)
    assert aims[400] == aims[1200] == 6 * MS + 8 * FRAME_NS  # margin and 8 frames
    assert aims[2110] == 6 * MS + 4 * FRAME_NS  # the hold over: 4 frames, as sent now


def test_far_too_much_held_waits_for_a_pause_before_speech_is_stretched() -> None:
    jb = JitterBuffer(watermark=1, adaptive=True)
    h = jb.history
    h.delays.extend((T0, 0) for _ in range(200))
    h.fastest, h.target_d, h.target_at, h.ts0 = 0, 0, 0, 0
    aim = jb.margin_ns
    # Played 100 ms past the aim, frame after frame: shortening is wanted at once, in a
    # pause only, and in speech too once it has lasted urgent_wait_ns.
    for tick in range(200):
        now = tick * FRAME_NS  # frame ``tick`` captured at ``now``, played 100 ms late
        jb._steer(now + aim + 100 * MS, 0, now * 48 // MS)
        assert jb.stretch_wanted < 0
        assert jb.stretch_urgent == (tick * FRAME_NS >= jb.urgent_wait_ns), tick
    # Back near the aim, and past it again: the wait starts over.
    jb._steer(200 * FRAME_NS + aim, 0, 200 * FRAME_NS * 48 // MS)
    jb._steer(201 * FRAME_NS + aim + 100 * MS, 0, 201 * FRAME_NS * 48 // MS)
    assert jb.stretch_wanted < 0 and not jb.stretch_urgent
