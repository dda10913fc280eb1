"""voxws's layer in the engine worker: the setting, the version guard, the stage timestamps (CPU)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from voxws import config
from voxws.engines import engine_layer
from voxws.engines.base import EngineStartError


def test_the_setting_defaults_to_batched_and_refuses_other_values():
    base = {"VOXWS_ENGINE": "synthetic"}
    assert config.load(base).engine_vae == "batched"
    assert config.load({**base, "VOXWS_ENGINE_VAE": "engine"}).engine_vae == "engine"
    with pytest.raises(config.ConfigError, match="VOXWS_ENGINE_VAE=fast"):
        config.load({**base, "VOXWS_ENGINE_VAE": "fast"})


def test_the_engine_decoder_needs_no_version_check_and_leaves_the_worker_alone(monkeypatch):
    monkeypatch.delenv("VOXWS_STAGE_LOG", raising=False)
    engine_layer.check_engine("engine")
    engine_layer.install("engine")  # no engine installed here: nothing may be imported or patched


def test_batched_refuses_an_engine_it_was_not_written_for(monkeypatch):
    def version(name: str) -> str:
        if name == "nano-vllm-voxcpm":
            return "2.1.0"
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(engine_layer.metadata, "version", version)
    with pytest.raises(EngineStartError) as e:
        engine_layer.check_engine("batched")
    msg = str(e.value)
    assert "2.0.5" in msg and "2.1.0" in msg and "VOXWS_ENGINE_VAE=engine" in msg


def test_batched_refuses_when_the_engine_is_missing(monkeypatch):
    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(engine_layer.metadata, "version", version)
    with pytest.raises(EngineStartError, match="installed: none"):
        engine_layer.check_engine("batched")


def test_server_stages_write_one_row_per_hand_over_and_chunk(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXWS_STAGE_LOG", str(tmp_path / "s"))
    log = engine_layer.ServerStages.from_env()
    assert log is not None
    req = log.request()
    req.submitted()
    req.chunk(1.0)
    req.chunk(2.0)
    log.flush()
    rows = [line.split() for line in Path(log.path).read_text().splitlines()]
    assert [(r[2], r[3]) for r in rows] == [("-1", "1"), ("0", "1"), ("1", "1")]
    monkeypatch.delenv("VOXWS_STAGE_LOG")
    assert engine_layer.ServerStages.from_env() is None


def test_the_worker_reads_voice_prompt_wavs_without_torchcodec():
    torch = pytest.importorskip("torch", reason="torch is in the dev extra; the GPU harness runs this on the card")
    import io

    import numpy as np

    from voxws.voices import wav_bytes

    calls = []

    def torchaudio_load(src, *a, format=None, **k):  # what torchaudio 2.9+ does without torchcodec
        calls.append(format)
        raise ImportError("TorchCodec is required for load_with_torchcodec")

    load = engine_layer.wav_loader(torchaudio_load)
    tone = (0.5 * np.sin(np.arange(7056 * 3) / 20)).astype(np.float32)
    wav, rate = load(io.BytesIO(wav_bytes(tone, 44100)), format="wav")
    assert rate == 44100 and tuple(wav.shape) == (1, len(tone)) and wav.dtype == torch.float32
    assert float((wav[0] - torch.from_numpy(tone)).abs().max()) < 1e-4
    assert calls == []
    with pytest.raises(ImportError, match="TorchCodec"):  # anything else still goes to torchaudio
        load(io.BytesIO(b"OggS not a wav"), format="ogg")
