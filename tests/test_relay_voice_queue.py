"""relay/voice_queue.py: what waits for a tunnelled connection stays short and new."""

from __future__ import annotations

from relay.voice_queue import MAX_AGE, MAX_FRAMES, VoiceQueue


def test_a_free_connection_takes_each_frame_at_once() -> None:
    q = VoiceQueue()
    assert q.offer(b"a", 0, 0.0) == [b"a"] and len(q) == 0 and q.written == 1


def test_a_busy_connection_keeps_the_newest_frames_only() -> None:
    q = VoiceQueue()
    for i in range(MAX_FRAMES + 5):
        assert q.offer(bytes([i]), 10**6, i * 0.001) == []
    assert len(q) == MAX_FRAMES and q.dropped == 5
    out = q.take(0, MAX_FRAMES * 0.001)
    assert out[0] == bytes([5]) and out[-1] == bytes([MAX_FRAMES + 4])  # the oldest went


def test_frames_that_waited_too_long_are_dropped_not_sent() -> None:
    q = VoiceQueue()
    q.offer(b"old", 10**6, 0.0)
    q.offer(b"new", 10**6, MAX_AGE)
    assert q.take(0, MAX_AGE + 0.001) == [b"new"] and q.dropped == 1


def test_what_is_written_at_once_stops_at_the_unsent_bound() -> None:
    q = VoiceQueue(max_unsent=100)
    for i in range(5):
        q.offer(bytes(60), 1000, i * 0.001)
    assert len(q.take(0, 0.01)) == 2  # 0 + 60 + 60 > 100: two go, three wait
    assert len(q) == 3
