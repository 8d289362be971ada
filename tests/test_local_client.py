"""pipeline/client/local_client.py: an in-process client for tests and benchmarks."""

from __future__ import annotations

import pytest

from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.ipc import events as ev
from pipeline.media.sources import MediaSpec

pytestmark = pytest.mark.timeout(120)


def test_connects_commands_and_stops(relay_port: int) -> None:
    cfg = ClientConfig(
        "127.0.0.1", relay_port, "loc", source=MediaSpec("silence"), sink=MediaSpec("null")
    )
    with LocalClient(cfg) as c:
        c.until(connected, 20, "connected")
        c.command(
            ev.BitrateCmd(24000), lambda v: v.encode is not None and v.encode.bitrate == 24000
        )
        with pytest.raises(AssertionError, match="had no effect"):
            c.command(ev.BitrateCmd(12000), lambda v: False, timeout=1.0)
        with pytest.raises(AssertionError, match="timed out waiting for nothing"):
            c.until(lambda v: False, 0.3, "nothing")
    assert c.sup.broker is None  # stopped: broker closed, rings unlinked (conftest checks)
