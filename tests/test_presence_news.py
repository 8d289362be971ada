"""pipeline/core/presence_news.py: which presence changes around a reconnect are news."""

from __future__ import annotations

from pipeline.core.presence_news import PresenceNews


def test_the_first_welcome_says_nothing_and_real_joins_are_news() -> None:
    news = PresenceNews(grace=10.0)
    assert news.welcome([("bob", "Lobby")], 0.0) == []
    assert news.joined("cy", "Lobby") == "cy joined Lobby"
    assert news.deadline is None and news.due(100.0) == []


def test_after_a_drop_returning_users_are_silent_and_the_missing_leave_late() -> None:
    news = PresenceNews(grace=10.0)
    news.link_lost([("bob", "Lobby"), ("cy", "Games"), ("dan", "Lobby")])
    assert news.welcome([("bob", "Lobby"), ("cy", "Lobby"), ("eve", "Lobby")], 5.0) == [
        "cy moved to Lobby",
        "eve joined Lobby",
    ]
    assert news.joined("dan", "Lobby") is None  # back within the grace
    assert news.joined("dan", "Lobby") == "dan joined Lobby"  # a second time is news
    assert news.deadline is None or news.due(5.0) == []


def test_whoever_does_not_come_back_is_announced_once() -> None:
    news = PresenceNews(grace=10.0)
    news.link_lost([("bob", "Lobby")])
    news.welcome([], 5.0)
    assert news.deadline == 15.0
    assert news.due(14.9) == []
    assert news.due(15.0) == ["bob left Lobby"]
    assert news.due(30.0) == [] and news.deadline is None


def test_a_second_drop_keeps_who_was_known_before_the_first() -> None:
    news = PresenceNews(grace=10.0)
    news.link_lost([("bob", "Lobby")])
    news.link_lost([])  # nobody was back yet when it dropped again
    assert news.welcome([("bob", "Lobby")], 1.0) == []


def test_a_drop_during_the_grace_keeps_the_awaited_and_adds_the_returned() -> None:
    news = PresenceNews(grace=10.0)
    news.link_lost([("bob", "Lobby"), ("cy", "Lobby")])
    news.welcome([("bob", "Lobby")], 1.0)  # cy still awaited
    news.link_lost([("bob", "Lobby")])
    assert news.welcome([], 3.0) == []
    assert news.joined("cy", "Lobby") is None and news.joined("bob", "Lobby") is None
