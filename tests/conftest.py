"""Shared pytest fixtures. Keep each fixture small and documented; helpers live in modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.jackaudio import DEFAULT_PCM, JackServer, Recorder, Recording

# --------------------------------------------------------------------------------------------
# Real audio: private JACK server + ALSA PCM "backtrack_test" + recorder (tests/jackaudio.py)


@dataclass
class JackAudio:
    """One simulated sound card: play to ``pcm`` with ``env()``, read what came out.

    ``server``: the running :class:`JackServer`; ``recorder``: the running :class:`Recorder`
    (ports ``rec:in_1..N``, PCM channel i -> ``rec:in_{i+1}``); ``alsa_conf``: the asound.conf
    defining ``pcm``.
    """

    server: JackServer
    recorder: Recorder
    alsa_conf: Path
    pcm: str
    channels: int
    rate: int
    period: int

    def env(self) -> dict[str, str]:
        """JACK_DEFAULT_SERVER, JACK_NO_START_SERVER, ALSA_CONFIG_PATH for a player process."""
        return self.server.env()

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ merged with :meth:`env` (pass as ``env=`` to subprocess)."""
        return self.server.environ(**extra)

    def stop(self) -> Recording:
        """Stop recording and return what was recorded (idempotent)."""
        return self.recorder.stop()

    def close(self) -> None:
        """Stop recorder and server; each step runs even if an earlier one fails."""
        try:
            if self.recorder.recording is None:
                self.recorder.kill()
        finally:
            self.server.stop()


def start_jack_audio(
    channels: int = 8,
    rate: int = 48000,
    period: int = 256,
    faketime: str | None = None,
    seconds: float = 60.0,
    pcm: str = DEFAULT_PCM,
    realtime: bool = True,
) -> JackAudio:
    """Start server, write the ALSA config, start the recorder; clean up on any failure."""
    server = JackServer(rate=rate, period=period, faketime=faketime, realtime=realtime)
    try:
        server.start()
        conf = server.write_alsa_config(channels, pcm=pcm)
        recorder = Recorder(server, channels=channels, seconds=seconds).start()
    except BaseException:
        server.stop()
        raise
    return JackAudio(server, recorder, conf, pcm, channels, rate, period)


@pytest.fixture
def jack_audio_factory() -> Iterator[Callable[..., JackAudio]]:
    """Factory: ``jack_audio_factory(channels=8, rate=48000, period=256, faketime=None,
    seconds=60.0, pcm="backtrack_test")`` -> started :class:`JackAudio`. Call it several times
    for several units (each has its own server and recorder process). All are torn down at
    the end of the test, pass or fail."""
    started: list[JackAudio] = []

    def make(**kwargs) -> JackAudio:
        ja = start_jack_audio(**kwargs)
        started.append(ja)
        return ja

    try:
        yield make
    finally:
        errors = []
        for ja in reversed(started):
            try:
                ja.close()
            except Exception as e:  # keep tearing down the others
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def jack_audio(request, jack_audio_factory) -> JackAudio:
    """One started :class:`JackAudio` (8 channels, 48 kHz, period 256). Override with indirect
    parametrization: ``@pytest.mark.parametrize("jack_audio", [{"channels": 2}], indirect=True)``."""
    params = getattr(request, "param", None) or {}
    return jack_audio_factory(**params)
