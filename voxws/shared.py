"""What every connection of one server uses: settings, engine, admission, metrics, voices."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from voxws import protocol, sizing
from voxws.admission import Admission
from voxws.config import Settings
from voxws.engines.base import Engine, VoicePrompt
from voxws.metrics import Metrics

if TYPE_CHECKING:
    from voxws.session import Session

# OpenAI's voice names: they mean the server's default voice unless a registered voice has that id.
OPENAI_VOICES = frozenset(("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                           "verse", "marin", "cedar"))
_PROMPT_CACHE = 32  # voice prompts kept decoded in memory


class VoiceBook(Protocol):
    """Where registered voices are looked up (voxws.voices.VoiceStore)."""

    def get(self, voice_id: str) -> Any: ...


class NoVoices:
    def get(self, voice_id: str) -> None:
        return None


class UnknownVoice(LookupError):
    pass


@dataclass
class Shared:
    settings: Settings
    engine: Engine
    admission: Admission
    metrics: Metrics
    version: str
    voices: VoiceBook = field(default_factory=NoVoices)
    draining: bool = False
    sessions: set[Session] = field(default_factory=set)
    _prompts: OrderedDict[str, VoicePrompt] = field(default_factory=OrderedDict)

    @property
    def default_voice(self) -> str | None:
        return getattr(self.settings, "default_voice", None)

    def limits(self) -> dict[str, float | int]:
        s = self.settings
        return {"max_text_chars": s.max_text_chars, "max_contexts": s.max_contexts,
                "max_message_bytes": s.max_message_bytes, "idle_timeout_s": s.idle_timeout_s,
                "max_queue": s.max_queue, "rate_limit_per_s": s.rate_limit_per_s,
                "max_unsent_audio_s": s.max_unsent_audio_s, "text_delay_ms": s.text_delay_ms,
                "text_buffer_chars": s.text_buffer_chars, "max_model_len": self.engine.max_model_len}

    def hello(self) -> str:
        e = self.engine
        return protocol.ready(version=self.version, group=self.settings.group, engine=e.name, model=e.model,
                              sample_rate=e.sample_rate, default_voice=self.default_voice, limits=self.limits())

    def resolve_voice(self, asked: str | None) -> str | None:
        """The voice id a context speaks in: the one asked for, else the server's default (OpenAI names
        mean the default unless registered). Raises UnknownVoice."""
        if asked is not None and self.voices.get(asked) is not None:
            return asked
        if asked is not None and asked not in OPENAI_VOICES:
            raise UnknownVoice(asked)
        default = self.default_voice
        if default is not None and self.voices.get(default) is None:
            raise UnknownVoice(default)
        return default

    def voice_prompt(self, voice_id: str) -> VoicePrompt:
        """The engine prompt of a registered voice, decoded once and kept (a deleted voice's prompt stays
        usable by contexts that already hold it)."""
        voice = self.voices.get(voice_id)
        if voice is None:
            raise UnknownVoice(voice_id)
        key = f"voice:{voice.id}:{voice.created}"
        prompt = self._prompts.get(key)
        if prompt is None:
            audio = np.asarray(voice.audio(), dtype=np.float32)
            positions = sizing.voice_positions(self.engine.count_tokens(voice.text), len(audio))
            # Derived data (the real engine's latents) is cached in the store under the store's model key.
            prompt = VoicePrompt(key, voice.text, audio, positions, voice_id=voice.id,
                                 load_cached=lambda kind: voice.cached(kind),
                                 store_cached=lambda kind, data: voice.store_cached(kind, None, data))
            self._prompts[key] = prompt
            while len(self._prompts) > _PROMPT_CACHE:
                self._prompts.popitem(last=False)
        else:
            self._prompts.move_to_end(key)
        return prompt
