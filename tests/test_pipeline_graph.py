"""pipeline/client/pipeline_graph.py: the declared pipeline and its consistency check."""

from __future__ import annotations

import pickle

import pytest

from pipeline.client.config import ClientConfig
from pipeline.client.pipeline_graph import (
    MAX_PLAYBACK_FRAMES,
    RINGS,
    STAGES,
    RingSpec,
    StageSpec,
    check_config,
    check_graph,
)
from pipeline.ipc.bus import BusAddress
from pipeline.media.sources import MediaSpec
from pipeline.stages.runtime import Wiring


def test_the_declared_pipeline_is_whole() -> None:
    check_graph(RINGS, STAGES)
    assert [s.name for s in STAGES] == [
        "control", "playback", "decode", "network", "encode", "capture",
    ]  # fmt: skip
    # A frame's path, read from the declaration: capture -> ... -> playback.
    by_reads = {s.reads: s for s in STAGES}
    path, stage = ["capture"], next(s for s in STAGES if s.name == "capture")
    while stage.writes is not None:
        stage = by_reads[stage.writes]
        path.append(stage.name)
    assert path == ["capture", "encode", "network", "decode", "playback"]


def test_every_stage_config_carries_the_client_settings_and_pickles() -> None:
    cfg = ClientConfig(
        "relay.example", 9, "me", channel="Games", sink=MediaSpec("null"), loss_percent=3.0,
        whisper=4, bitrate=24000, playback_frames=1, fec=False, plc=False, loss_hint=7.0,
    )  # fmt: skip
    wiring = Wiring(BusAddress("ipc:///tmp/x/pub", "ipc:///tmp/x/sub"))
    configs = {s.name: s.configure(wiring, cfg) for s in STAGES}
    assert configs["control"].channel == "Games" and configs["control"].host == "relay.example"
    assert configs["decode"].target == 1 and not configs["decode"].fec
    assert not configs["decode"].plc
    assert configs["network"].whisper == 4 and configs["network"].chaos_percent == 3.0
    assert configs["encode"].bitrate == 24000 and configs["encode"].loss_hint == 7.0
    assert configs["playback"].sink == MediaSpec("null")
    for config in configs.values():
        assert pickle.loads(pickle.dumps(config)) == config


def _noop(cfg: object) -> None:
    pass


def _stage(name: str, reads: str | None = None, writes: str | None = None) -> StageSpec:
    return StageSpec(name, _noop, lambda w, c: None, reads, writes)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((_stage("a", writes="r"),), "writers \\['a'\\] and readers \\[\\]"),
        ((_stage("a", writes="r"), _stage("b", reads="r"), _stage("c", reads="r")), "readers"),
        ((_stage("a", writes="r"), _stage("a", reads="r")), "names repeat"),
        ((_stage("a", writes="r"), _stage("b", reads="q")), "unknown ring 'q'"),
    ],
)
def test_a_broken_graph_is_refused(stages: tuple[StageSpec, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_graph((RingSpec("r", 4, 3840),), stages)


def test_a_playout_queue_longer_than_its_ring_is_refused() -> None:
    check_config(ClientConfig("h", 1, "n", playback_frames=MAX_PLAYBACK_FRAMES))
    for bad in (-1, MAX_PLAYBACK_FRAMES + 1):
        with pytest.raises(ValueError, match="playback frames must be"):
            check_config(ClientConfig("h", 1, "n", playback_frames=bad))


def test_every_stage_but_control_is_on_the_audio_path() -> None:
    """They run at the audio priority; the control session (TLS, no ring) does not."""
    assert [s.name for s in STAGES if not s.on_audio_path] == ["control"]


def test_an_unknown_priority_is_refused() -> None:
    for good in ("realtime", "high", "normal"):
        check_config(ClientConfig("h", 1, "n", priority=good))
    with pytest.raises(ValueError, match="priority must be one of"):
        check_config(ClientConfig("h", 1, "n", priority="max"))
