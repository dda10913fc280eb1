"""What a socket sends, as typed items in the order the client must see them.

One Lane per context holds its events and audio in order, so a `segment` or `words` message sits
exactly before the audio it describes and `done` after the last of it. Audio carries its duration in
samples (at the context's output rate): budgets, `audio_ms` and metrics count samples, never bytes,
since an Opus or MP3 packet's size says nothing of its length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Audio:
    payload: bytes
    samples: int


@dataclass(frozen=True, slots=True)
class Event:
    frame: str


Item = Audio | Event


class Lane:
    """One context's unsent items, oldest first, and how much audio they hold."""

    __slots__ = ("items", "queued_samples")

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.queued_samples = 0

    def put(self, item: Item) -> None:
        self.items.append(item)
        if type(item) is Audio:
            self.queued_samples += item.samples

    def take(self) -> Item:
        item = self.items.popleft()
        if type(item) is Audio:
            self.queued_samples -= item.samples
        return item

    def clear(self) -> None:
        self.items.clear()
        self.queued_samples = 0

    def __bool__(self) -> bool:
        return bool(self.items)
