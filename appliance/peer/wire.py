"""The peer datagram: versioned, authenticated, replay-checked, fixed layout per kind.

Why it looks like this:

- UDP, one datagram per message, no fragmentation (the largest is under 130 bytes): a lost
  datagram is replaced by the next one (STATE is sent many times a second), so there is
  no retransmission and no connection state that a restart could leave half-open.
- A fixed `struct` layout per kind, and the total length must match exactly: a parser
  with no optional parts and no length fields driven by the sender has no room for
  "read past the end" bugs, and any garbage is rejected by a length check before the
  (more expensive) HMAC.
- HMAC-SHA256 over everything before it, truncated to 16 bytes (128 bits: far beyond what
  an attacker on a stage network can brute-force during a show), compared with
  `hmac.compare_digest` so timing says nothing about how many bytes matched. Only a holder
  of the shared key can make a datagram that passes; a stranger can still replay one, so
  `ReplayGuard` checks freshness (sender wall clock) and sequence numbers per sender boot.
- Envelope: ``magic "BTK" | version u8 | kind u8 | sender u16 | boot u64 | seq u64 |
  wall_ns u64 | payload | mac[16]``, all big-endian. `boot` is random per process start,
  so a restarted unit (whose `seq` starts again at 0) is told apart from a replay of its
  previous life; `seq` increases strictly per boot; `wall_ns` (CLOCK_REALTIME) lets a
  receiver refuse a recording of last night's show even if it restarted since. The
  freshness check needs the units' wall clocks within `max_skew_ns` (5 s) of each other:
  chrony between the units (deploy/) does that without internet.
- `decode` raises only `WireError` for any bytes whatsoever (fuzzed in the tests): the
  receiving thread must never die from a datagram, and the `reason` is a short fixed
  category so counters stay bounded whatever arrives.

Run ``python -m appliance.peer.wire`` to print a fresh key (64 hex digits) for the key file.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from hashlib import blake2b
from pathlib import Path

from ..errors import UserError
from ..livemix import MIX_TEXT_MAX

log = logging.getLogger(__name__)

MAGIC = b"BTK"
VERSION = 3  # 2: STATE carries the switch plan (jumps, vamps); 3: ALIVE, MIX
MAC_LEN = 16
MIN_KEY_LEN = 16
ACTION_MAX = 128  # bytes of UTF-8 in a COMMAND action ("goto 120", "setlist friday late")
REASON_MAX = 64  # bytes of UTF-8 in a FAILING reason (longer reasons are cut, not refused)
MIX_MAX = MIX_TEXT_MAX  # bytes of UTF-8 of the live mix's JSON in MIX

# STATE.state values (the transport's states, as numbers on the wire)
STATE_CODES = {"stopped": 0, "cued": 1, "playing": 2, "paused": 3}
"""The transport state (appliance.transport) as a STATE message carries it."""
STATE_NAMES = {code: name for name, code in STATE_CODES.items()}

# STATE.plan values
PLAN_NONE, PLAN_JUMP, PLAN_VAMP, PLAN_CANCELLED = 0, 1, 2, 3

# STATE.flags bits
FLAG_FAILING = 0x1
"""The leader is failing (device gone, xrun storm). Repeated in every STATE so that the
one FAILING datagram being lost does not delay the takeover by a whole timeout."""


class Kind(IntEnum):
    STATE = 1
    PING = 2
    PONG = 3
    COMMAND = 4
    FAILING = 5
    FOLLOWER = 6
    ALIVE = 7
    MIX = 8


class WireError(ValueError):
    """A datagram that must be dropped. `reason` is one of REASONS, for counters."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


REASONS = ("short", "magic", "version", "kind", "length", "hmac", "payload")


class KeyFileError(UserError):
    """The peer key file is missing or unusable; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------
# Payloads


@dataclass(frozen=True)
class LeaderState:
    """The leader's transport, many times a second.

    `frame` is the song frame that reached the DAC at `t_ns` on the sender's
    CLOCK_MONOTONIC; with the clock offset a follower turns that into "which frame is at
    the leader's DAC now" without any assumption about network delay. `rate` is the
    nominal sample rate (frames per second of song time), `setlist` a 32-bit hash of the
    setlist in use (`node.setlist_hash`): a follower switches to its own setlist with that
    hash, and without one refuses to follow a different show.

    `plan` is the switch the leader's writer holds (a quantized jump, the next turn of a
    vamp), sent ahead of time so every follower posts the same switch and makes it at the
    same song frame (a takeover mid-vamp goes on vamping): PLAN_NONE (none, or the last one
    done), PLAN_JUMP / PLAN_VAMP (at song frame `plan_at` play on from `plan_to`; a vamp
    loops `plan_to`..`plan_at` until released), PLAN_CANCELLED (plan `plan_id` was taken
    back: a follower holding it drops it). `plan_id` names the plan (16 bits, wrapping).
    """

    term: int
    leader: int
    song: int
    state: int  # a STATE_CODES value
    frame: int
    t_ns: int
    rate: int
    setlist: int
    flags: int = 0
    plan: int = 0
    plan_id: int = 0
    plan_at: int = 0
    plan_to: int = 0

    @property
    def failing(self) -> bool:
        return bool(self.flags & FLAG_FAILING)


@dataclass(frozen=True)
class Ping:
    """Follower -> leader: t1 is the follower's monotonic ns at send."""

    t1: int


@dataclass(frozen=True)
class Pong:
    """Leader -> follower: echoes t1, adds the leader's receive (t2) and send (t3) times."""

    t1: int
    t2: int
    t3: int


@dataclass(frozen=True)
class Command:
    """A control press forwarded to the leader. `press_id` is unique per press on the
    sending unit, so the leader acts once even if the datagram is sent several times."""

    press_id: int
    action: str


@dataclass(frozen=True)
class Failing:
    """The leader announces its own failure so a follower takes over at once instead of
    waiting for the heartbeat timeout."""

    term: int
    reason: str


# Why a follower is not ready to take over, sent in FOLLOWER so the leader can say it too
# (the leader cannot see its follower's card or lock); bits of the `locked` byte above bit 0.
NO_DEVICE, SETLIST_MISMATCH, NOT_LOCKED, ID_CLASH, KEY_MISMATCH = 1, 2, 4, 8, 16
WHY_NOT = {NO_DEVICE: "follower without a device", SETLIST_MISMATCH: "setlist mismatch",
           NOT_LOCKED: "follower not locked", ID_CLASH: "id clash",
           KEY_MISMATCH: "key mismatch"}


@dataclass(frozen=True)
class Follower:
    """A follower announces itself: the takeover order needs to know who is alive, with
    which priority, and whether it is locked (a follower that is not locked is a worse
    successor than one that is), and if not ready, why (`why_not`: bits above)."""

    term: int
    lock_error_ns: int
    locked: bool
    priority: int
    why_not: int = 0


@dataclass(frozen=True)
class Alive:
    """Leader -> followers, sent by the leader's audio writer after a period reached its
    device (at most one per heartbeat interval): the leader is alive exactly while its
    audio plays. STATE comes from the peer thread, which a busy host may hold back for tens
    of milliseconds while the writer, at a higher priority, plays on; a follower that took
    that silence for a dead leader would be heard beside a live one. ALIVE only proves the
    leader of `term` alive: who leads, and what it plays, is still STATE's to say."""

    term: int


@dataclass(frozen=True)
class Mix:
    """Leader -> followers: the live mix (appliance.livemix, its compact JSON), at every
    change and twice a second, so a takeover never brings a muted stem back. `version`
    counts the leader's changes; a follower compares the text, not the number."""

    version: int
    text: str


Payload = LeaderState | Ping | Pong | Command | Failing | Follower | Alive | Mix


@dataclass(frozen=True)
class Envelope:
    """An authenticated datagram. `kind` always agrees with the payload's type."""

    kind: Kind
    sender: int
    boot: int
    seq: int
    wall_ns: int
    payload: Payload
    version: int = VERSION


# --------------------------------------------------------------------------------------------
# Layout

_HEADER = struct.Struct("!3sBBHQQQ")
HEADER_LEN = _HEADER.size  # 31

_LAYOUT: dict[Kind, struct.Struct] = {
    Kind.STATE: struct.Struct("!QHIBqqIIIBHqq"),
    Kind.PING: struct.Struct("!q"),
    Kind.PONG: struct.Struct("!qqq"),
    Kind.COMMAND: struct.Struct(f"!QB{ACTION_MAX}s"),
    Kind.FAILING: struct.Struct(f"!QB{REASON_MAX}s"),
    Kind.FOLLOWER: struct.Struct("!QqBH"),
    Kind.ALIVE: struct.Struct("!Q"),
    Kind.MIX: struct.Struct(f"!IH{MIX_MAX}s"),
}
KIND_OF: dict[type, Kind] = {
    LeaderState: Kind.STATE, Ping: Kind.PING, Pong: Kind.PONG, Command: Kind.COMMAND,
    Failing: Kind.FAILING, Follower: Kind.FOLLOWER, Alive: Kind.ALIVE, Mix: Kind.MIX,
}
# total datagram length per kind byte: the length check needs no enum conversion
_TOTAL: dict[int, int] = {int(k): HEADER_LEN + s.size + MAC_LEN for k, s in _LAYOUT.items()}
MAX_DATAGRAM = max(_TOTAL.values())


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.digest(key, signed, "sha256")[:MAC_LEN]


def _text(raw: bytes, n: int, limit: int) -> str:
    """Length-prefixed, zero-padded UTF-8. The padding must be zeros: one valid byte
    string per value keeps the format canonical (no hidden data in the padding)."""
    if n > limit or any(raw[n:]):
        raise WireError("payload", "bad text length or padding")
    try:
        return raw[:n].decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("payload", "text is not UTF-8") from None


def _pack_text(text: str, limit: int, *, cut: bool) -> tuple[int, bytes]:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        if not cut:
            raise ValueError(f"text longer than {limit} bytes of UTF-8: {text!r}")
        raw = raw[:limit].decode("utf-8", "ignore").encode("utf-8")  # cut on a character
    return len(raw), raw


def _pack_payload(p: Payload) -> tuple[Kind, bytes]:
    kind = KIND_OF.get(type(p))
    if kind is None:
        raise TypeError(f"not a peer payload: {p!r}")
    layout = _LAYOUT[kind]
    try:
        if isinstance(p, LeaderState):
            if p.state not in STATE_NAMES:
                raise ValueError(f"LeaderState.state must be 0..3, not {p.state}")
            if p.plan not in (PLAN_NONE, PLAN_JUMP, PLAN_VAMP, PLAN_CANCELLED):
                raise ValueError(f"LeaderState.plan must be 0..3, not {p.plan}")
            return kind, layout.pack(p.term, p.leader, p.song, p.state, p.frame, p.t_ns,
                                     p.rate, p.setlist, p.flags, p.plan, p.plan_id,
                                     p.plan_at, p.plan_to)
        if isinstance(p, Ping):
            return kind, layout.pack(p.t1)
        if isinstance(p, Pong):
            return kind, layout.pack(p.t1, p.t2, p.t3)
        if isinstance(p, Command):
            n, raw = _pack_text(p.action, ACTION_MAX, cut=False)
            if n == 0:
                raise ValueError("Command.action is empty")
            return kind, layout.pack(p.press_id, n, raw)
        if isinstance(p, Failing):
            n, raw = _pack_text(p.reason, REASON_MAX, cut=True)
            return kind, layout.pack(p.term, n, raw)
        if isinstance(p, Alive):
            return kind, layout.pack(p.term)
        if isinstance(p, Mix):
            n, raw = _pack_text(p.text, MIX_MAX, cut=False)
            return kind, layout.pack(p.version, n, raw)
        assert isinstance(p, Follower)
        if not 0 <= p.why_not < 128:
            raise ValueError("Follower.why_not does not fit 7 bits")
        return kind, layout.pack(p.term, p.lock_error_ns, (1 if p.locked else 0) | p.why_not << 1,
                                 p.priority)
    except struct.error as e:
        raise ValueError(f"{type(p).__name__}: a field does not fit the wire format ({e})") from None


def _unpack_payload(kind: int, raw: bytes) -> Payload:
    """Only called on authenticated data of the right length, yet still checks every field
    a peer could get wrong (a buggy or newer peer with the same key and version)."""
    v = _LAYOUT[Kind(kind)].unpack(raw)
    if kind == Kind.STATE:
        if v[3] not in STATE_NAMES:
            raise WireError("payload", "unknown transport state")
        if v[9] > PLAN_CANCELLED:
            raise WireError("payload", "unknown switch plan")
        return LeaderState(*v)
    if kind == Kind.PING:
        return Ping(*v)
    if kind == Kind.PONG:
        return Pong(*v)
    if kind == Kind.COMMAND:
        action = _text(v[2], v[1], ACTION_MAX)
        if not action:
            raise WireError("payload", "empty action")
        return Command(v[0], action)
    if kind == Kind.FAILING:
        return Failing(v[0], _text(v[2], v[1], REASON_MAX))
    if kind == Kind.ALIVE:
        return Alive(*v)
    if kind == Kind.MIX:
        return Mix(v[0], _text(v[2], v[1], MIX_MAX))
    term, err, flags, prio = v
    if flags >> 1 & ~sum(WHY_NOT):
        raise WireError("payload", "unknown follower problem bits")
    return Follower(term, err, bool(flags & 1), prio, flags >> 1)


def encode(payload: Payload, *, sender: int, boot: int, seq: int, wall_ns: int,
           key: bytes) -> bytes:
    """One datagram. Raises ValueError for a value the format cannot carry: that is a bug
    in the caller, not something to send."""
    kind, body = _pack_payload(payload)
    return _seal(kind, body, sender=sender, boot=boot, seq=seq, wall_ns=wall_ns, key=key)


def _seal(kind: int, body: bytes, *, sender: int, boot: int, seq: int, wall_ns: int,
          key: bytes, version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    """Authenticate arbitrary payload bytes. Internal: `encode` only ever passes valid
    payloads; the tests use this to fuzz the payload parser behind a valid HMAC."""
    try:
        head = _HEADER.pack(magic, version, kind, sender, boot, seq, wall_ns)
    except struct.error as e:
        raise ValueError(f"envelope field does not fit the wire format ({e})") from None
    signed = head + body
    return signed + _mac(key, signed)


def decode(data: bytes, key: bytes) -> Envelope:
    """Check and parse one datagram; raises WireError(reason) and nothing else for any
    bytes. Cheap checks come first so garbage costs no HMAC; the payload is parsed only
    after the HMAC proved a key holder made it."""
    n = len(data)
    if n < HEADER_LEN + MAC_LEN:
        raise WireError("short")
    magic, version, kind, sender, boot, seq, wall_ns = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("magic")
    if version != VERSION:
        raise WireError("version", str(version))
    total = _TOTAL.get(kind)
    if total is None:
        raise WireError("kind", str(kind))
    if n != total:
        raise WireError("length", f"{n} bytes for kind {kind}, expected {total}")
    data = bytes(data)
    if not hmac.compare_digest(_mac(key, data[:-MAC_LEN]), data[-MAC_LEN:]):
        raise WireError("hmac")
    payload = _unpack_payload(kind, data[HEADER_LEN:-MAC_LEN])
    return Envelope(Kind(kind), sender, boot, seq, wall_ns, payload, version)


def setlist_hash(data: bytes | str) -> int:
    """32 bits identifying a show (e.g. titles, stem files and lengths joined). Only equality
    matters: a follower whose hash differs plays something else, so it must not follow."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return int.from_bytes(blake2b(data, digest_size=4).digest(), "big")


def new_boot_id() -> int:
    """Random per process start (64 bits: two starts never collide in practice)."""
    return secrets.randbits(64)


# --------------------------------------------------------------------------------------------
# Replay protection


@dataclass
class _Stream:
    boot: int
    top: int  # highest seq accepted in this boot
    bits: int  # bit i set: seq top-i accepted
    last_wall: int  # newest wall_ns accepted in this boot
    superseded: deque[int]


class ReplayGuard:
    """Refuse a datagram that is stale, repeated, or from a previous life of its sender.

    Call `check` only on envelopes that passed `decode` (authenticated): otherwise a forger
    could move the windows. Per sender it remembers the current boot, a `window`-bit
    bitmap of the sequence numbers seen below the highest one (UDP reorders a little, so
    a late datagram inside the window is still accepted once), and the last few boots it
    replaced.

    A new boot (the sender restarted) is accepted when fresh and newer by wall clock than
    anything of the boot it replaces; from then on the old boot is "old-boot". Ordering
    boots by wall clock means a replayed message of an earlier life, still inside the 5 s
    freshness window, cannot take the sender's place back. (Cost: a sender whose wall clock
    stepped backwards across a restart is refused until its clock passes its old one,
    at most about the freshness window.)

    Memory is bounded: at most `max_senders` senders (least recently accepted evicted) and
    `max_old_boots` superseded boots per sender.
    """

    def __init__(self, window: int = 64, max_skew_ns: int = 5_000_000_000,
                 max_senders: int = 64, max_old_boots: int = 8):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.max_skew_ns = max_skew_ns
        self.max_senders = max_senders
        self.max_old_boots = max_old_boots
        self._mask = (1 << window) - 1
        self._senders: OrderedDict[int, _Stream] = OrderedDict()

    def check(self, env: Envelope, now_wall_ns: int) -> str | None:
        """None: accept (and remember it). Otherwise "stale", "replay" or "old-boot"."""
        if abs(env.wall_ns - now_wall_ns) > self.max_skew_ns:
            return "stale"
        st = self._senders.get(env.sender)
        if st is None:
            self._senders[env.sender] = _Stream(env.boot, env.seq, 1, env.wall_ns,
                                                deque(maxlen=self.max_old_boots))
            if len(self._senders) > self.max_senders:
                self._senders.popitem(last=False)
            return None
        if env.boot != st.boot:
            if env.boot in st.superseded or env.wall_ns <= st.last_wall:
                return "old-boot"
            st.superseded.append(st.boot)
            st.boot, st.top, st.bits, st.last_wall = env.boot, env.seq, 1, env.wall_ns
            self._senders.move_to_end(env.sender)
            return None
        if env.seq > st.top:
            shift = env.seq - st.top
            st.bits = ((st.bits << shift) | 1) & self._mask if shift < self.window else 1
            st.top = env.seq
        else:
            d = st.top - env.seq
            if d >= self.window or (st.bits >> d) & 1:
                return "replay"
            st.bits |= 1 << d
        if env.wall_ns > st.last_wall:
            st.last_wall = env.wall_ns
        self._senders.move_to_end(env.sender)
        return None

    def forget(self, sender: int) -> None:
        """Drop what is known about a sender (e.g. a unit removed from the configuration)."""
        self._senders.pop(sender, None)

    def __len__(self) -> int:
        return len(self._senders)


# --------------------------------------------------------------------------------------------
# Counters and the receive step


class Counters(Mapping[str, int]):
    """Datagrams accepted and dropped per reason, for `status` and the journal: a unit that
    drops "hmac" has the wrong key, "stale" a wrong wall clock, "replay" a looping network
    or an attacker, "id-clash" a twin with the same unit id. Keys: "accepted" and each
    drop reason seen (a fixed, small set, so this stays bounded)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.dropped: dict[str, int] = {}

    def accept(self) -> None:
        self.accepted += 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def __getitem__(self, name: str) -> int:
        if name == "accepted":
            return self.accepted
        return self.dropped.get(name, 0)

    def __iter__(self) -> Iterator[str]:
        yield "accepted"
        yield from self.dropped

    def __len__(self) -> int:
        return 1 + len(self.dropped)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: {"accepted": n, "dropped": {reason: n}}."""
        return {"accepted": self.accepted, "dropped": dict(sorted(self.dropped.items()))}


def receive(data: bytes, *, key: bytes, guard: ReplayGuard, counters: Counters,
            now_wall_ns: int, me: tuple[int, int] | None = None) -> Envelope | None:
    """The whole receive step: decode, drop our own echo, replay check, count. Returns the
    envelope to act on, or None (already counted).

    `me` = (unit id, boot): a datagram from our own id and boot is our own echo ("self",
    e.g. broadcast); from our id with another boot it is a second unit configured with
    the same id ("id-clash"), which would confuse the takeover order, so it is refused and
    counted where status can show it.
    """
    try:
        env = decode(data, key)
    except WireError as e:
        counters.drop(e.reason)
        return None
    if me is not None and env.sender == me[0]:
        counters.drop("self" if env.boot == me[1] else "id-clash")
        return None
    why = guard.check(env, now_wall_ns)
    if why is not None:
        counters.drop(why)
        return None
    counters.accept()
    return env


# --------------------------------------------------------------------------------------------
# Key file


def generate_key() -> str:
    """A fresh 256-bit key as 64 hex digits: the format `load_key` prefers (printable, so
    it survives copy and paste between the two units)."""
    return secrets.token_hex(32)


def load_key(path: str | os.PathLike[str], *,
             warn: Callable[[str], None] | None = None) -> bytes:
    """The shared key from `path`: hex digits (whitespace around them ignored) or, if the
    file is not pure hex, its raw bytes. Both units read the same file the same way, so
    either form gives both the same key. At least 16 bytes of key material are required
    (a short key would make the HMAC guessable).

    A file readable or writable by others works (refusing it would stop a show over a
    permission bit) but is reported through `warn` (default: the module's logger),
    because anyone who can read it can command the unit.
    """
    p = Path(path)
    hint = f"generate one with: python -m appliance.peer.wire > {p}; chmod 600 {p}"
    try:
        raw = p.read_bytes()
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{p}: peer key file not found ({hint}; copy the same file to "
                           "every unit of the pair)") from None
    except IsADirectoryError:
        raise KeyFileError(f"{p}: peer key file is a directory, not a file") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read the peer key file: {e.strerror}") from None
    text = raw.strip()
    key = raw
    if text:
        try:
            key = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = raw
    if len(key) < MIN_KEY_LEN:
        raise KeyFileError(f"{p}: peer key too short: {len(key)} bytes of key material, need "
                           f"at least {MIN_KEY_LEN} ({hint})")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        (warn or log.warning)(f"{p}: peer key file is accessible by other users (mode "
                              f"{stat.S_IMODE(mode):o}); anyone who reads it can command "
                              f"this unit: chmod 600 {p}")
    return key


if __name__ == "__main__":
    print(generate_key())
