"""Reading a store's rows page by page, one helper for every keyset-paged store call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Pages read at most by one ``pages`` call unless told otherwise: bounds every loop.
MAX_PAGES = 100_000


def pages(
    fetch: Callable[[int], Sequence[T]],
    key: Callable[[T], int],
    *,
    after: int = 0,
    size: int,
    max_pages: int = MAX_PAGES,
) -> Iterator[Sequence[T]]:
    """Pages of ``fetch(after)`` — up to ``size`` rows with a key above ``after``, in key
    order — until a short page, or ``max_pages`` of them."""
    for _ in range(max_pages):
        page = fetch(after)
        if page:
            yield page
        if len(page) < size:
            return
        after = key(page[-1])


__all__ = ["MAX_PAGES", "pages"]
