"""bench/playout_sim.py: the simulated call plays every frame of a clean path at one delay
and turns jitter into a measured playout delay (behaviour, no quality thresholds)."""

from __future__ import annotations

import numpy as np

from bench import playout_sim
from bench.netem import Impairment
from pipeline.media import synthetic
from pipeline.media.audio_format import BLOCK_SAMPLES


def test_a_clean_path_plays_every_frame_at_one_delay() -> None:
    signal = synthetic.tone(2.0, 440)
    bodies = playout_sim.encode(signal, 0)
    arrived = playout_sim.arrivals(bodies, Impairment())
    assert [k for _, k in arrived] == list(range(len(bodies)))
    for adaptive in (False, True):
        played = playout_sim.play(bodies, arrived, adaptive)
        # Every frame played once; the adaptive start waits for a second packet to see the
        # path is clean, and may then start from it (the first dropped, counted discarded).
        dropped = played.stats["discarded"]
        assert len(played.delay_ms) == len(bodies) - dropped and dropped <= int(adaptive)
        assert np.ptp(played.delay_ms) == 0  # at one delay
        assert played.stats["late"] == 0 and played.stats["lost"] == 0
        assert len(played.audio) % BLOCK_SAMPLES == 0


def test_jitter_shows_as_delay_and_late_packets_not_as_errors() -> None:
    bodies = playout_sim.encode(synthetic.speech_like(4.0), 0)
    calm = playout_sim.play(bodies, playout_sim.arrivals(bodies, Impairment()), True)
    rough = playout_sim.play(
        bodies, playout_sim.arrivals(bodies, Impairment(jitter_sd_ms=30, seed=1)), True
    )
    assert np.median(rough.delay_ms) > np.median(calm.delay_ms) + 30
    assert len(rough.delay_ms) >= 0.9 * len(bodies)  # most packets still played
