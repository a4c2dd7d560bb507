"""`backtrack devices` and `backtrack midi-ports`: the names a show file may use.

`device.name`, `midi.in.port` and `midi.out.port` are names the system makes up (a card's
id, a sequencer client's name) and a band member setting up a box has no other way to
learn them than `aplay -L` and `aconnect -l`, which say nothing about channel counts. Both
lists come from the libraries the player itself uses (pyalsaaudio, python-rtmidi), so what
is listed is what the player can open.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import UserError


@dataclass
class PcmFacts:
    """What one PCM takes, read from ALSA's configuration space (nothing is played)."""

    name: str
    channels: list[int] = field(default_factory=list)
    rates: Any = None          # pyalsaaudio: an int, a (min, max) tuple or a list
    formats: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class CardFacts:
    index: int
    id: str                    # what hw:CARD=<id>,DEV=N names, stable across reboots
    name: str
    longname: str
    pcms: list[PcmFacts] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # plughw, front, dmix ... of this card


class quiet_stderr:
    """libasound and libjack print their own error lines to fd 2 ("ALSA lib seq_hw.c:...",
    "Cannot connect to server socket"); the command says the same thing in one line, so
    they are swallowed while a client is opened."""

    def __enter__(self) -> None:
        try:
            sys.stderr.flush()
            self._saved: int | None = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except OSError:
            self._saved = None

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


# -- ALSA ---------------------------------------------------------------------------------

def _alsa() -> Any:
    try:
        import alsaaudio
    except ImportError as exc:
        raise UserError(f"pyalsaaudio is not available ({exc})") from None
    return alsaaudio


def probe_pcm(name: str, alsa: Any = None) -> PcmFacts:
    """Open a PCM for playback, non-blocking, read its ranges, close it. A PCM in use (the
    player playing on it) refuses the open and is reported busy: listing never takes a
    card from a show."""
    alsa = alsa or _alsa()
    facts = PcmFacts(name)
    try:
        pcm = alsa.PCM(type=alsa.PCM_PLAYBACK, mode=alsa.PCM_NONBLOCK, device=name)
    except alsa.ALSAAudioError as exc:
        text = str(exc)
        facts.error = "busy (in use, by the player?)" if "busy" in text.lower() else text
        return facts
    try:
        facts.channels = list(pcm.getchannels())
        facts.rates = pcm.getrates()
        facts.formats = list(pcm.getformats())
    except alsa.ALSAAudioError as exc:
        facts.error = str(exc)
    finally:
        pcm.close()
    return facts


def _card_of(pcm_name: str) -> tuple[str, str] | None:
    """`front:CARD=PCH,DEV=0` -> ("front", "PCH"); None for a PCM of no card."""
    kind, _, params = pcm_name.partition(":")
    for part in params.split(","):
        key, _, value = part.partition("=")
        if key == "CARD":
            return kind, value
    return None


def alsa_devices(alsa: Any = None) -> tuple[list[CardFacts], list[str]]:
    """The cards, each with its `hw` PCMs probed and its other PCMs named, and the PCMs of
    no card (`default`, `null`, the ones defined in asound.conf)."""
    alsa = alsa or _alsa()
    names = list(alsa.pcms(alsa.PCM_PLAYBACK))
    cards = []
    for index, card_id in zip(alsa.card_indexes(), alsa.cards(), strict=False):
        try:
            name, longname = alsa.card_name(index)
        except alsa.ALSAAudioError:
            name, longname = card_id, ""
        card = CardFacts(index, card_id, name, longname)
        hw = [n for n in names if _card_of(n) == ("hw", card_id)]
        # without name hints for its devices a card still has a first device
        for pcm_name in hw or [f"hw:CARD={card_id},DEV=0"]:
            card.pcms.append(probe_pcm(pcm_name, alsa))
        card.plugins = sorted({k for n in names if (c := _card_of(n)) and c[1] == card_id
                               and (k := c[0]) != "hw"})
        cards.append(card)
    known = {c.id for c in cards}
    others = [n for n in names if (_card_of(n) or ("", ""))[1] not in known]
    return cards, others


def spans(numbers: Sequence[int]) -> str:
    """[1, 2, 3, 4, 6] -> "1-4, 6": a plug PCM takes 1 to 10000 channels."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{numbers[i]}-{numbers[j]}")
        else:
            out.extend(str(n) for n in numbers[i:j + 1])
        i = j + 1
    return ", ".join(out)


def _rates(rates: Any) -> str:
    if isinstance(rates, int):
        return f"{rates} Hz"
    if isinstance(rates, tuple) and len(rates) == 2:
        return f"{rates[0]}-{rates[1]} Hz"
    if rates:
        return ", ".join(str(r) for r in rates) + " Hz"
    return "rates unknown"


def describe_pcm(p: PcmFacts) -> str:
    if p.error:
        return f"{p.name}  {p.error}"
    ch = spans(p.channels) or "?"
    word = "channel" if p.channels == [1] else "channels"
    fmts = " ".join(p.formats)
    return f"{p.name}  {ch} {word}, {_rates(p.rates)}" + (f", {fmts}" if fmts else "")


def _wrapped(names: Iterable[str], indent: str, width: int = 92) -> list[str]:
    lines, line = [], ""
    for n in names:
        if line and len(indent) + len(line) + len(n) + 2 > width:
            lines.append(indent + line.rstrip(", ") + ",")
            line = ""
        line += n + ", "
    if line:
        lines.append(indent + line.rstrip(", "))
    return lines


def devices_main(out: TextIO = sys.stdout) -> int:
    cards, others = alsa_devices()
    print("Sound cards (device.name: prefer hw:CARD=ID,DEV=N, stable across reboots and "
          "USB ports):", file=out)
    if not cards:
        print("  none found", file=out)
    for c in cards:
        long = f" ({c.longname})" if c.longname and c.longname != c.name else ""
        print(f"  card {c.index} {c.id}: {c.name}{long}", file=out)
        for p in c.pcms:
            print(f"    {describe_pcm(p)}", file=out)
        if c.plugins:
            print(f"    also, with CARD={c.id}: {', '.join(c.plugins)}", file=out)
    print("Other PCMs (ALSA configuration, asound.conf):", file=out)
    for line in _wrapped(others, "  ") or ["  none"]:
        print(line, file=out)
    return 0


# -- MIDI ---------------------------------------------------------------------------------

MIDI_APIS = ("alsa", "jack")


def midi_ports(api: str) -> tuple[list[str], list[str]]:
    """(ports to read from, ports to send to) on `api`, as python-rtmidi names them: the
    names `midi.in.port` and `midi.out.port` match a part of."""
    try:
        import rtmidi
    except ImportError as exc:
        raise UserError(f"python-rtmidi is not available ({exc})") from None
    from .controls.midi import rtmidi_api

    found: list[list[str]] = []
    # listing must never start a JACK server of its own, which libjack does by default
    saved = os.environ.get("JACK_NO_START_SERVER")
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        for cls in (rtmidi.MidiIn, rtmidi.MidiOut):
            with quiet_stderr():
                client = cls(rtmidi_api(api), name="backtrack-list")
                try:
                    found.append(list(client.get_ports()))
                finally:
                    client.delete()
    except rtmidi.RtMidiError as exc:
        if api == "jack":
            raise UserError("no JACK server is running (start jackd, or list the ALSA "
                            "sequencer's ports with --api alsa)") from None
        raise UserError("no ALSA sequencer (is the snd-seq kernel module loaded? "
                        f"/dev/snd/seq): {exc}") from None
    finally:
        if saved is None:
            os.environ.pop("JACK_NO_START_SERVER", None)
        else:
            os.environ["JACK_NO_START_SERVER"] = saved
    return found[0], found[1]


def midi_ports_main(api: str, out: TextIO = sys.stdout) -> int:
    ins, outs = midi_ports(api)
    for title, names in ((f"MIDI ports to read from ({api}; midi.in.port: part of a name):",
                          ins),
                         (f"MIDI ports to send to ({api}; midi.out.port: part of a name):",
                          outs)):
        print(title, file=out)
        for n in names or ["none"]:
            print(f"  {n}", file=out)
    return 0
