"""One paging loop for every keyset-paged store call."""

from __future__ import annotations

from shipyard.monitoring.paging import pages


def test_pages_follow_the_key_until_a_short_page() -> None:
    rows = list(range(1, 26))
    calls: list[int] = []

    def fetch(after: int) -> list[int]:
        calls.append(after)
        return [r for r in rows if r > after][:10]

    assert [list(p) for p in pages(fetch, lambda r: r, size=10)] == [
        rows[:10],
        rows[10:20],
        rows[20:],
    ]
    assert calls == [0, 10, 20]


def test_pages_stop_at_max_pages_and_skip_an_empty_last_page() -> None:
    assert list(pages(lambda after: [after + 1], lambda r: r, size=1, max_pages=3)) == [
        [1],
        [2],
        [3],
    ]
    assert list(pages(lambda after: [], lambda r: r, size=1)) == []
