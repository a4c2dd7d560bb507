"""Is the show protected? One answer, with its reasons, for status, the LED and the journal.

A standby pair that does not protect looks exactly like one that does until the leader
dies: the follower's LED says "standby", nothing is heard from either. So each unit works
out, from what it can see, whether a follower is locked to the leader and ready to take
over, and names every cause when not. The leader cannot see its follower's card or lock:
a follower sends its reasons in each FOLLOWER announcement (wire.WHY_NOT bits).

Pure: the node gathers the facts, `assess` decides, `Reporter` says it once per change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import WHY_NOT

HOLD_NS = 1_000_000_000   # a change must last this long before it is reported (no flicker)

# Cause names, as status and the journal write them (each entry of `why_not` starts with one)
ID_CLASH, KEY_MISMATCH, SETLIST_MISMATCH = "id clash", "key mismatch", "setlist mismatch"
NEVER_HEARD, LEADER_SILENT, FOLLOWER_SILENT = "peer never heard", "leader silent", \
    "follower silent"
NOT_LOCKED, NO_DEVICE, STARTING = "follower not locked", "follower without a device", \
    "starting"


@dataclass(frozen=True)
class Facts:
    """What one unit sees. `followers`: (unit id, why_not bits) of every live follower
    (leader side); `locked`: None when there is nothing to lock to (the leader does not
    play), else whether this follower has been locked (with a grace after a seek)."""

    role: str
    heard_peer: bool = False
    leader_alive: bool = False
    device_ok: bool = True
    locked: bool | None = None
    setlist_mismatch: bool = False
    id_clash: str = ""        # detail when a twin with our id was seen lately
    key_mismatch: int = 0     # datagrams with a bad HMAC lately
    followers: tuple[tuple[int, int], ...] = ()
    followers_seen: bool = False  # any follower announced itself since start


def assess(f: Facts) -> list[str]:
    """Every reason the show is not protected (empty: protected)."""
    why: list[str] = []
    if f.id_clash:
        why.append(f"{ID_CLASH}: {f.id_clash}")
    if f.key_mismatch:
        why.append(f"{KEY_MISMATCH}: {f.key_mismatch} messages with a bad HMAC lately "
                   "(copy the same key_file to every unit)")
    if f.setlist_mismatch:
        why.append(f"{SETLIST_MISMATCH}: the other unit loaded another show")
    if not f.heard_peer:
        why.append(f"{NEVER_HEARD}: no message from another unit (check peer.peers, "
                   "peer.listen, the network and the key)")
    if f.role == "starting":
        why.append(f"{STARTING}: listening for a running leader")
    elif f.role == "follower":
        if f.heard_peer and not f.leader_alive:
            why.append(f"{LEADER_SILENT}: no heartbeat from a leader")
        if not f.device_ok:
            why.append(f"{NO_DEVICE}: this unit's audio interface is not playing")
        if f.locked is False:
            why.append(f"{NOT_LOCKED}: this unit is not locked to the leader's song")
    elif f.role == "leader" and f.heard_peer:
        ready = [uid for uid, bits in f.followers if bits == 0]
        if not f.followers:
            why.append(f"{FOLLOWER_SILENT if f.followers_seen else NEVER_HEARD}: no follower "
                       "announces itself")
        elif not ready:
            seen: list[str] = []
            for uid, bits in f.followers:
                for bit, name in WHY_NOT.items():
                    if bits & bit and name not in seen and not (
                            name == SETLIST_MISMATCH and f.setlist_mismatch):
                        seen.append(name)
                        why.append(f"{name}: unit {uid} says so")
    return why


@dataclass
class Reporter:
    """Turns the assessment of each moment into the one that is reported: a change is
    taken once it has lasted `hold_ns` (a follower seeking for a moment does not make the
    LED flicker); the first assessment is taken at once."""

    hold_ns: int = HOLD_NS
    why_not: list[str] | None = None
    _pending: list[str] | None = None
    _since: int = 0
    changes: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def protected(self) -> bool | None:
        return None if self.why_not is None else not self.why_not

    def update(self, why: list[str], now_ns: int) -> bool:
        """Returns True when the reported state changed (log it then)."""
        names = [w.split(":")[0] for w in why]
        if self.why_not is None:
            self.why_not = why
            self.changes.append((now_ns, not why))
            return True
        if names == [w.split(":")[0] for w in self.why_not]:
            self.why_not = why   # same causes; details may change (counts)
            self._pending = None
            return False
        if self._pending is None or [w.split(":")[0] for w in self._pending] != names:
            self._pending, self._since = why, now_ns
        if now_ns - self._since < self.hold_ns:
            return False
        was = self.protected
        self.why_not, self._pending = why, None
        if was != (not why):
            self.changes.append((now_ns, not why))
            del self.changes[:-64]
        return True
