#!/usr/bin/env bash
# Install (or uninstall) the backtrack player as an appliance on Raspberry Pi OS / Debian 12.
#
#   sudo deploy/install.sh                     install, enable and start (a player that is
#                                              playing a song is not restarted: see --wait)
#   sudo deploy/install.sh --uninstall         remove the program and units; keep the
#                                              config, media, state and user
#   sudo deploy/install.sh --uninstall --purge remove those too
#   sudo deploy/install.sh --root DIR          lay the files out under DIR (an image being
#                                              built, or the tests); implies --no-apt
#                                              --no-venv, and starts nothing (it says what
#                                              it would restart)
#   deploy/install.sh --wheelhouse DIR         build wheels of every pinned package
#                                              (deploy/constraints.txt) into DIR, on a
#                                              machine with a network; installs nothing
#   sudo deploy/install.sh --from-wheelhouse DIR   install the Python packages from DIR
#                                              only: no network, no compiler
# Other options:
#   --force      restart the player even while it plays a song (cuts the song)
#   --wait       while it plays a song, wait until it is stopped or cued, then restart
#   --pair       install the network-online drop-in for a unit of a pair (by default
#                only when the config has a peer: section); --no-pair removes it
#   --no-apt     do not install Debian packages
#   --no-venv    do not create/update the venv under /opt/backtrack
#   --no-start   enable the units but do not start or restart them now
#   --chrony leader|follower   also install the chrony snippet for this unit's role
#
# Safe to run again: a file is only written when its contents differ, the config and the
# USB-audio udev rule are only created when missing (they are the band's), and a second
# run with nothing new reports "0 change(s)" and touches nothing. The player is restarted
# only when something changed, and never while it plays or holds a song (paused): the new
# files are installed, the restart is held back (exit 3) until --wait, --force, a later run
# or `systemctl restart backtrack`.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY="$SRC/deploy"
CONSTRAINTS="$DEPLOY/constraints.txt"   # every Python package, pinned (make lock)
PROBE="$DEPLOY/player-probe.py"         # reads the config, asks the player's socket
ROOT=""
ACTION=install
PURGE=0
DO_APT=1
DO_VENV=1
DO_START=1          # 1: start/restart now; 0: --no-start; report: --root (say what it would)
FORCE=0
WAIT=0
WAIT_POLL=1         # seconds between two questions to the player while --wait waits
PAIR=auto           # the network-online drop-in: auto (from the config), yes, no
CHRONY=""
WHEELHOUSE=""       # --wheelhouse DIR: build wheels there
FROM_WHEELHOUSE=""  # --from-wheelhouse DIR: install from there, no index
OPT=/opt/backtrack
PENDING=/run/backtrack-restart-pending  # a held-back restart (tmpfs: a reboot settles it)
CHANGES=0
HELD=""             # what the player was doing when its restart was held back
VENV_HELD=0         # 1: the venv was not updated either (a song was playing)
ARGS=("$@")

APT_PACKAGES=(python3 python3-venv libsndfile1 alsa-utils chrony)
# To build pyalsaaudio and systemd-python from source; not needed with --from-wheelhouse.
APT_BUILD=(python3-dev build-essential pkg-config libasound2-dev libsystemd-dev)
# Raspberry Pi OS only: the GPIO library that works on a Pi 4 and a Pi 5 (the venv sees it
# through --system-site-packages).
APT_OPTIONAL=(python3-lgpio)
# What pip needs to build this package itself offline (pyproject.toml's [build-system];
# setuptools before 70.1 asks for `wheel`): put into a wheelhouse beside the pinned set.
BUILD_REQUIRES=("setuptools>=64" wheel)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
say() { printf 'backtrack-install: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }
changed() { CHANGES=$((CHANGES + 1)); say "$*"; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) [ $# -ge 2 ] || die "--root needs a folder"; ROOT=$(realpath -m "$2"); shift ;;
      --root=*) ROOT=$(realpath -m "${1#--root=}") ;;
      --uninstall) ACTION=uninstall ;;
      --purge) PURGE=1 ;;
      --no-apt) DO_APT=0 ;;
      --no-venv) DO_VENV=0 ;;
      --no-start) DO_START=0 ;;
      --force) FORCE=1 ;;
      --wait) WAIT=1 ;;
      --pair) PAIR=yes ;;
      --no-pair) PAIR=no ;;
      --chrony) [ $# -ge 2 ] || die "--chrony needs leader or follower"; CHRONY="$2"; shift ;;
      --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a folder"; ACTION=wheelhouse
                    WHEELHOUSE=$(realpath -m "$2"); shift ;;
      --from-wheelhouse) [ $# -ge 2 ] || die "--from-wheelhouse needs a folder"
                         FROM_WHEELHOUSE=$(realpath -m "$2"); shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  case "$CHRONY" in ""|leader|follower) ;; *) die "--chrony takes leader or follower" ;; esac
  [ "$FORCE" = 0 ] || [ "$WAIT" = 0 ] || die "--force and --wait: choose one"
  if [ -n "$FROM_WHEELHOUSE" ] && [ ! -d "$FROM_WHEELHOUSE" ]; then
    die "--from-wheelhouse: $FROM_WHEELHOUSE is not a folder (build it with --wheelhouse)"
  fi
  if [ -n "$ROOT" ]; then
    [ "$ROOT" != / ] || die "--root / is the live system: leave --root out"
    DO_APT=0; DO_VENV=0
    [ "$DO_START" = 0 ] || DO_START=report
  fi
  if [ "$ACTION" != wheelhouse ]; then
    [ "$(id -u)" = 0 ] || die "run as root (sudo): it creates a user and writes under /etc"
  fi
}

# ---- helpers: every write goes through these, so a second run changes nothing ----------
r() { printf '%s%s' "$ROOT" "$1"; }          # a live path inside the target root

put() {  # put SRC DEST MODE: write DEST only if its contents or mode differ
  local src=$1 dst; dst=$(r "$2"); local mode=$3
  mkdir -p "$(dirname "$dst")"
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    if [ "$(stat -c %a "$dst")" != "$mode" ]; then chmod "$mode" "$dst"; changed "mode $mode $2"; fi
    return 0
  fi
  install -m "$mode" "$src" "$dst"
  changed "wrote $2"
}

put_once() {  # put_once SRC DEST MODE [GROUP]: create DEST only if missing (the band's file)
  local src=$1 dst; dst=$(r "$2"); local mode=$3 group=${4:-}
  if [ -e "$dst" ]; then return 0; fi
  mkdir -p "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst"
  [ -z "$group" ] || chgrp "$(group_id "$group")" "$dst"
  changed "created $2 (yours to edit; never overwritten)"
}

link() {  # link TARGET LINK
  local target=$1 lnk; lnk=$(r "$2")
  if [ -L "$lnk" ] && [ "$(readlink "$lnk")" = "$target" ]; then return 0; fi
  mkdir -p "$(dirname "$lnk")"
  ln -sfn "$target" "$lnk"
  changed "linked $2 -> $target"
}

remove() {  # remove PATH...: files, links or folders, if present
  local p
  for p in "$@"; do
    if [ -e "$(r "$p")" ] || [ -L "$(r "$p")" ]; then rm -rf "$(r "$p")"; changed "removed $p"; fi
  done
}

group_id() {  # a group's id as the target root knows it
  awk -F: -v g="$1" '$1 == g {print $3}' "$(r /etc/group)"
}

root_opt() { [ -z "$ROOT" ] || printf -- '--root=%s' "$ROOT"; }

systemctl_() {  # systemctl on the live system, or offline on the target root
  if [ -n "$ROOT" ]; then systemctl --root="$ROOT" "$@"; else systemctl "$@"; fi
}

enable_units() {
  local u
  for u in "$@"; do
    if ! systemctl_ is-enabled --quiet "$u" 2>/dev/null; then
      systemctl_ enable --quiet "$u"
      changed "enabled $u"
    fi
  done
}

disable_units() {
  local u
  for u in "$@"; do
    [ -e "$(r "/etc/systemd/system/$u")" ] || continue
    if [ -z "$ROOT" ]; then systemctl stop "$u" 2>/dev/null || true; fi
    if systemctl_ is-enabled --quiet "$u" 2>/dev/null; then
      systemctl_ disable --quiet "$u"
      changed "disabled $u"
    fi
  done
}

source_stamp() {  # what is being installed: the package sources and the pins, hashed
  (cd "$SRC" && { find pyproject.toml appliance -name '*.py' -o -name '*.toml'
                  echo deploy/constraints.txt; } | LC_ALL=C sort \
     | xargs sha256sum) | sha256sum | cut -c1-16
}

# ---- install ----------------------------------------------------------------------------
install_apt() {
  local missing=() p wanted=("${APT_PACKAGES[@]}")
  [ -n "$FROM_WHEELHOUSE" ] || wanted+=("${APT_BUILD[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  for p in "${APT_OPTIONAL[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
       && apt-cache show "$p" >/dev/null 2>&1; then missing+=("$p"); fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  changed "installed ${missing[*]}"
}

install_venv() {  # the package and every dependency at the pinned version
  local stamp; stamp=$(source_stamp)
  if [ ! -x "$OPT/venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$OPT/venv"
    changed "created the venv $OPT/venv"
  fi
  if [ "$(cat "$OPT/venv/.backtrack-source" 2>/dev/null)" != "$stamp" ]; then
    # Not under a song: the player imports some modules late (PyAV, soxr on a stem that
    # needs them), and must not meet half-upgraded ones mid-show.
    if ! may_restart; then
      VENV_HELD=1
      return 0
    fi
    local pip=("$OPT/venv/bin/pip" install -q --upgrade -c "$CONSTRAINTS")
    if [ -n "$FROM_WHEELHOUSE" ]; then
      pip+=(--no-index --find-links "$FROM_WHEELHOUSE")
      "${pip[@]}" "$SRC" || die "pip could not install from the wheelhouse $FROM_WHEELHOUSE:" \
        "was it built with --wheelhouse from this checkout's deploy/constraints.txt, on the" \
        "same OS, architecture and Python as this box?"
    else
      "$OPT/venv/bin/pip" install -q --upgrade pip
      "${pip[@]}" "$SRC"
    fi
    echo "$stamp" > "$OPT/venv/.backtrack-source"
    changed "installed the backtrack package ($stamp) into $OPT/venv" \
      "(pinned by deploy/constraints.txt${FROM_WHEELHOUSE:+, from $FROM_WHEELHOUSE})"
  fi
}

build_wheelhouse() {  # wheels of the pinned set (and of what builds this package) into DIR
  local tmp n
  command -v python3 >/dev/null || die "--wheelhouse needs python3 (and python3-venv)"
  mkdir -p "$WHEELHOUSE"
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: $tmp is local
  trap "rm -rf '$tmp'" EXIT
  python3 -m venv "$tmp/venv" || die "python3 -m venv failed (apt install python3-venv)"
  "$tmp/venv/bin/pip" install -q --upgrade pip
  say "building wheels for Python $("$tmp/venv/bin/python" -c \
    'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]} on {platform.machine()}")') into $WHEELHOUSE"
  "$tmp/venv/bin/pip" wheel -q -w "$WHEELHOUSE" -c "$CONSTRAINTS" -r "$CONSTRAINTS" \
    "${BUILD_REQUIRES[@]}" \
    || die "pip wheel failed: a package built from source needs the build packages" \
           "(apt install ${APT_BUILD[*]}) and the network"
  n=$(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l)
  say "$n wheels in $WHEELHOUSE. Copy the folder to each box of the same OS, architecture" \
      "and Python, and install there with: sudo deploy/install.sh --from-wheelhouse DIR"
}

do_install() {
  [ "$DO_APT" = 0 ] || install_apt
  # the user and its groups, then the folders that belong to it
  put "$DEPLOY/sysusers.d/backtrack.conf" /usr/lib/sysusers.d/backtrack.conf 644
  mkdir -p "$(r /etc)"
  local before after
  before=$(users_state)
  # shellcheck disable=SC2046
  systemd-sysusers $(root_opt) "$(r /usr/lib/sysusers.d/backtrack.conf)" >/dev/null 2>&1 \
    || systemd-sysusers $(root_opt) "$(r /usr/lib/sysusers.d/backtrack.conf)"
  after=$(users_state)
  [ "$before" = "$after" ] || changed "created/updated user backtrack (groups audio, gpio)"
  put "$DEPLOY/tmpfiles.d/backtrack.conf" /usr/lib/tmpfiles.d/backtrack.conf 644
  before=$(tree_state /etc/backtrack /srv/backtrack)
  # shellcheck disable=SC2046
  systemd-tmpfiles --create $(root_opt) "$(r /usr/lib/tmpfiles.d/backtrack.conf)"
  after=$(tree_state /etc/backtrack /srv/backtrack)
  [ "$before" = "$after" ] || changed "created /etc/backtrack and /srv/backtrack/media"

  # the program
  [ "$DO_VENV" = 0 ] || install_venv
  link "$OPT/venv/bin/backtrack" /usr/local/bin/backtrack

  # the band's config (never overwritten)
  put_once "$DEPLOY/config.example.yaml" /etc/backtrack/config.yaml 640 backtrack

  # systemd, udev, watchdog
  put "$DEPLOY/backtrack.service" /etc/systemd/system/backtrack.service 644
  put "$DEPLOY/backtrack-cpufreq.service" /etc/systemd/system/backtrack-cpufreq.service 644
  put "$DEPLOY/systemd/backtrack-watchdog.conf" /etc/systemd/system.conf.d/backtrack-watchdog.conf 644
  put "$DEPLOY/udev/60-backtrack-gpio.rules" /etc/udev/rules.d/60-backtrack-gpio.rules 644
  put_once "$DEPLOY/udev/99-backtrack-usb-audio.rules" /etc/udev/rules.d/99-backtrack-usb-audio.rules 644
  if [ -n "$CHRONY" ]; then
    put "$DEPLOY/chrony/backtrack-$CHRONY.conf" "/etc/chrony/conf.d/backtrack-$CHRONY.conf" 644
  fi
  pair_dropin

  # documentation next to the program, for the unit's Documentation=
  local d
  put "$DEPLOY/README.md" /usr/share/doc/backtrack/deploy-README.md 644
  for d in "$SRC"/hardware/*.md "$SRC"/hardware/*.svg; do
    [ -e "$d" ] && put "$d" "/usr/share/doc/backtrack/hardware/$(basename "$d")" 644
  done
  for d in "$DEPLOY"/chrony/*.conf "$DEPLOY"/udev/*.rules; do
    put "$d" "/usr/share/doc/backtrack/examples/$(basename "$d")" 644
  done

  if [ -z "$ROOT" ]; then
    systemctl daemon-reload
    udevadm control --reload 2>/dev/null || true
  fi
  enable_units backtrack-cpufreq.service backtrack.service
  start_units
}

pair_dropin() {  # network-online.target for a unit of a pair only (see the drop-in)
  local want=$PAIR rc=0
  if [ "$want" = auto ]; then
    probe peer "$(r /etc/backtrack/config.yaml)" || rc=$?
    case "$rc" in
      0) want=yes ;;
      1) want=no ;;
      *) say "warning: cannot tell from the config whether this unit is one of a pair;" \
             "the network-online drop-in is left as it is (--pair or --no-pair decide)" >&2
         return 0 ;;
    esac
  fi
  if [ "$want" = yes ]; then
    put "$DEPLOY/systemd/backtrack-pair.conf" /etc/systemd/system/backtrack.service.d/pair.conf 644
  else
    remove /etc/systemd/system/backtrack.service.d/pair.conf
    rmdir "$(r /etc/systemd/system/backtrack.service.d)" 2>/dev/null || true
  fi
}

# ---- the restart: never in the middle of a song ------------------------------------------
probe() {  # the config and the player's control socket, through deploy/player-probe.py
  local py=python3
  if [ -z "$ROOT" ] && [ -x "$OPT/venv/bin/python" ]; then py="$OPT/venv/bin/python"; fi
  "$py" "$PROBE" "$@"
}

player_state() {  # ask the player: PLAYER_STATE=playing|paused|cued|stopped, PLAYER_WHAT.
  local out sock rc=0                  # Returns 1 when nobody answers, 2 when the question
  PLAYER_STATE=""; PLAYER_WHAT=""      # could not be asked (then taken as "in a song")
  sock=$(r "$(probe socket "$(r /etc/backtrack/config.yaml)")")
  out=$(probe status "$sock") || rc=$?
  case "$rc" in
    0) PLAYER_STATE=${out%%$'\t'*}; PLAYER_WHAT=${out#*$'\t'} ;;
    3) return 1 ;;
    *) PLAYER_STATE=unknown
       PLAYER_WHAT="(deploy/player-probe.py failed with status $rc, see above)"
       return 2 ;;
  esac
}

in_song() { case "$PLAYER_STATE" in playing|paused|unknown) return 0 ;; *) return 1 ;; esac; }

invocation() {  # the running player's systemd invocation id (empty under --root)
  [ -n "$ROOT" ] || systemctl show -p InvocationID --value backtrack.service 2>/dev/null || true
}

restart_owed() {  # an earlier run held a restart back, and the player has not restarted since
  local f; f=$(r "$PENDING")
  [ -e "$f" ] || return 1
  if [ -n "$(cat "$f")" ] && [ "$(cat "$f")" != "$(invocation)" ]; then
    rm -f "$f"; return 1
  fi
  return 0
}

owe_restart() { mkdir -p "$(dirname "$(r "$PENDING")")"; invocation > "$(r "$PENDING")"; }
restart_paid() { rm -f "$(r "$PENDING")"; }

may_restart() {  # 0: restart now; 1: held back (HELD says why). Asks the player unless --force
  local rc=0
  [ "$FORCE" = 0 ] || return 0
  player_state || rc=$?
  [ "$rc" != 1 ] || return 0   # not running, or not answering: restart as before
  in_song || return 0
  owe_restart                  # so a later run restarts it even if this one is interrupted
  if [ "$WAIT" = 1 ]; then
    say "waiting for the song to end: $PLAYER_STATE $PLAYER_WHAT. The new files are" \
        "installed; the player restarts when it is stopped or cued (Ctrl-C stops waiting:" \
        "the new version then runs after the next 'systemctl restart backtrack')"
    while :; do
      rc=0; player_state || rc=$?
      [ "$rc" != 1 ] || break
      in_song || break
      sleep "$WAIT_POLL"
    done
    say "the player is ${PLAYER_STATE:-not answering any more}: the restart goes ahead"
    return 0
  fi
  HELD="$PLAYER_STATE $PLAYER_WHAT"
  return 1
}

start_units() {
  local owed=0 rc=0
  if [ "$CHANGES" -gt 0 ] || restart_owed; then owed=1; fi
  case "$DO_START" in
    1)
      systemctl start backtrack-cpufreq.service
      if [ "$owed" = 1 ] && systemctl is-active --quiet backtrack.service; then
        if may_restart; then
          systemctl restart backtrack.service
          restart_paid
          say "restarted the player: it runs the new version"
        fi
      else
        systemctl start backtrack.service
        restart_paid
      fi
      say "status: $(systemctl show -p StatusText --value backtrack.service)" ;;
    report)  # --root: nothing is started; a player answering on the root's socket is asked
      [ "$owed" = 0 ] || player_state || rc=$?
      if [ "$owed" = 1 ] && [ "$rc" = 0 ]; then
        if may_restart; then
          say "would run: systemctl restart backtrack.service (--root: nothing is started)"
          restart_paid
        fi
      fi ;;
    0)
      if [ "$owed" = 1 ] && [ -z "$ROOT" ] && systemctl is-active --quiet backtrack.service; then
        owe_restart
        say "not restarted (--no-start): the player runs the new version after the next" \
            "'systemctl restart backtrack'"
      fi ;;
  esac
}

held_back() {  # the message when the restart was held back; the caller exits 3
  local cmd="$0" a
  for a in "${ARGS[@]}"; do cmd+=" $a"; done
  say "not restarting the player: it is $HELD." >&2
  if [ "$VENV_HELD" = 1 ]; then
    say "the program in $OPT/venv was not updated either (the player loads some modules" \
        "late; they must not change under a song); the other files are installed. Run this" \
        "install again while it is stopped or cued." >&2
  else
    say "the new files are installed; the player runs the new version after the next" \
        "'systemctl restart backtrack' (between songs, or after the show), or when this" \
        "install is run again while it is stopped or cued." >&2
  fi
  say "to restart when the song ends: $cmd --wait" >&2
  say "to restart now and cut the song: $cmd --force" >&2
}

users_state() { { cat "$(r /etc/passwd)" "$(r /etc/group)" 2>/dev/null || true; } | sha256sum; }

tree_state() {  # paths, modes and owners under the given folders (to detect a change)
  local p
  for p in "$@"; do
    if [ -e "$(r "$p")" ]; then find "$(r "$p")" -printf '%p %m %u %g\n'; fi
  done | LC_ALL=C sort | sha256sum
}

# ---- uninstall ------------------------------------------------------------------------
do_uninstall() {
  disable_units backtrack.service backtrack-cpufreq.service
  remove /etc/systemd/system/backtrack.service /etc/systemd/system/backtrack-cpufreq.service \
         /etc/systemd/system/backtrack.service.d \
         /etc/systemd/system.conf.d/backtrack-watchdog.conf \
         /etc/udev/rules.d/60-backtrack-gpio.rules \
         /etc/chrony/conf.d/backtrack-leader.conf /etc/chrony/conf.d/backtrack-follower.conf \
         /usr/local/bin/backtrack /usr/share/doc/backtrack "$OPT" \
         /usr/lib/tmpfiles.d/backtrack.conf
  if [ "$PURGE" = 1 ]; then
    remove /etc/backtrack /srv/backtrack /var/lib/backtrack /var/cache/backtrack \
           /etc/udev/rules.d/99-backtrack-usb-audio.rules /usr/lib/sysusers.d/backtrack.conf
    if grep -q '^backtrack:' "$(r /etc/passwd)" 2>/dev/null; then
      # shellcheck disable=SC2046
      userdel $([ -z "$ROOT" ] || printf -- '--root %s' "$ROOT") backtrack
      changed "removed user backtrack"
    fi
    if grep -q '^backtrack:' "$(r /etc/group)" 2>/dev/null; then
      # shellcheck disable=SC2046
      groupdel $([ -z "$ROOT" ] || printf -- '--root %s' "$ROOT") backtrack
      changed "removed group backtrack"
    fi
  else
    say "kept /etc/backtrack, /srv/backtrack/media, /var/lib/backtrack and user backtrack" \
        "(--purge removes them)"
  fi
  if [ -z "$ROOT" ]; then systemctl daemon-reload; fi
}

main() {
  parse_args "$@"
  case "$ACTION" in
    wheelhouse) build_wheelhouse; return 0 ;;
    install) do_install ;;
    uninstall) do_uninstall ;;
  esac
  say "$ACTION done${ROOT:+ under $ROOT}: $CHANGES change(s)"
  if [ -n "$HELD" ]; then held_back; exit 3; fi
}

# Sourced (the tests call single functions), it only defines them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
