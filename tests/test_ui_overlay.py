"""The diagnostics overlay: its figures come from the view; the graph keeps one minute."""

from __future__ import annotations

from PyQt6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from pipeline.core.client_view import ClientView
from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo
from ui.overlay import DiagnosticsOverlay, diagnostics_html, max_depth
from ui.screenshot import sample_events


def populated() -> ClientView:
    view = ClientView()
    for event in sample_events(1_700_000_000.0):
        view.apply(event)
    return view


def test_html_shows_links_speakers_stages_and_rings() -> None:
    text = diagnostics_html(populated())
    for expected in (
        "23.4 ms",  # TCP ping
        "21.7 ms",  # UDP RTT
        "4.8 %",  # loss over 10 s
        "74.2 ms p50",  # mouth to ear (with the 6.5 ms Opus lookahead)
        "Bob",  # speaker named from the roster
        "Carol",
        "jitter_wait 38.5 / 61.0",  # per-stage latency
        "arrival_to_ear 45.9 / 69.2",
        "97.5 ms p99",  # mouth to ear: arrival to ear plus the UDP RTT, sending, lookahead
        "fill 2",
        "219 dropped",
    ):
        assert expected in text, expected


def test_html_with_nothing_reported() -> None:
    text = diagnostics_html(ClientView())
    assert "nobody is speaking" in text
    assert "no report" in text


def test_html_escapes_names_and_counts_ring_drops() -> None:
    view = ClientView()
    view.apply(ev.Roster(1, "L", ["L"], [UserInfo(7, "<b>x</b>", "L")]))
    view.apply(ev.DecodeStats(speakers=[ev.SpeakerStats(7, depth=1)], ring_dropped=4))
    view.apply(ev.CaptureStats(ring_dropped=2, ring_fill=3))
    text = diagnostics_html(view)
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert "drops 4" in text and "drops 2" in text and "fill 3" in text


def test_html_shows_each_speakers_adaptive_playout() -> None:
    view = ClientView()
    view.apply(
        ev.DecodeStats(
            speakers=[
                ev.SpeakerStats(
                    7,
                    depth=3,
                    target_ms=42.5,
                    delay_ms=47.0,
                    late=2,
                    late_percent=1.5,
                    accelerated_ms=120.0,
                    expanded_ms=80.0,
                    recovered=9,
                    recovered_red=31,
                )
            ]
        )
    )
    text = diagnostics_html(view)
    # The adaptive playout per speaker: target and delay, late share, stretching; and
    # lost frames rebuilt from FEC and from redundant copies.
    for expected in ("42.5 ms", "47.0 ms", "2 (1.5 %)", "120 / 80 ms", "9 / 31"):
        assert expected in text, expected


def test_max_depth() -> None:
    assert max_depth(populated()) == 3
    assert max_depth(ClientView()) == 0


def test_overlay_refresh_samples_and_places_itself(qtbot: QtBot) -> None:
    parent = QWidget()
    qtbot.addWidget(parent)
    parent.resize(900, 700)
    overlay = DiagnosticsOverlay(parent)
    view = populated()
    overlay.refresh(view, 10.0, sample=True)
    overlay.refresh(view, 10.5, sample=False)
    assert len(overlay.history.samples) == 1
    assert not overlay.isVisible()
    parent.show()
    overlay.show_for(view)
    assert overlay.isVisible()
    assert "Bob" in overlay.text.text()
    geo = overlay.geometry()
    assert geo.right() < parent.width() and geo.top() >= 0
    parent.resize(1000, 700)
    qtbot.waitUntil(lambda: overlay.geometry().right() > geo.right(), timeout=2000)


def test_html_shows_the_fec_hint_and_what_listeners_report() -> None:
    view = ClientView()
    assert "FEC" in diagnostics_html(view)
    view.apply(
        ev.EncodeStats(
            loss_hint=7,
            hint_source="worst listener",
            listener_loss=7.5,
            listener_late=1.25,
            listeners=3,
        )
    )
    text = diagnostics_html(view)
    assert "FEC for 7 % (worst listener)" in text
    assert "of 3 listeners: worst 7.5 % lost, 1.2 % late" in text


def test_html_shows_the_voice_path_and_the_udp_ping_loss() -> None:
    view = ClientView()
    assert "Voice path" in diagnostics_html(view)
    view.apply(ev.NetworkStats(voice_path="udp", udp_loss_percent=0.0))
    assert "voice over UDP" in diagnostics_html(view)
    view.apply(ev.NetworkStats(voice_path="tcp", udp_loss_percent=100.0))
    html = diagnostics_html(view)
    assert "voice over TCP (UDP blocked)" in html and "100.0 %" in html


def test_html_shows_the_sealed_voice_counters() -> None:
    view = ClientView()
    view.apply(ev.NetworkStats(good=900, late=3, lost=7, replayed=2, too_old=1, bad_auth=4))
    assert "900 good, 3 late, 7 lost, 3 replayed, 4 forged" in diagnostics_html(view)
