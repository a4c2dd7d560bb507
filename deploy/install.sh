#!/usr/bin/env bash
# Install (or uninstall) the backtrack player as an appliance on Raspberry Pi OS / Debian 12.
#
#   sudo deploy/install.sh                     install, enable and start
#   sudo deploy/install.sh --uninstall         remove the program and units; keep the
#                                              config, media, state and user
#   sudo deploy/install.sh --uninstall --purge remove those too
#   sudo deploy/install.sh --root DIR          lay the files out under DIR (an image being
#                                              built, or the tests); implies --no-apt
#                                              --no-venv --no-start
# Other options:
#   --no-apt     do not install Debian packages
#   --no-venv    do not create/update the venv under /opt/backtrack
#   --no-start   enable the units but do not start them now
#   --chrony leader|follower   also install the chrony snippet for this unit's role
#
# Safe to run again: a file is only written when its contents differ, the config and the
# USB-audio udev rule are only created when missing (they are the band's), and a second
# run with nothing new reports "0 change(s)" and touches nothing.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY="$SRC/deploy"
ROOT=""
ACTION=install
PURGE=0
DO_APT=1
DO_VENV=1
DO_START=1
CHRONY=""
OPT=/opt/backtrack
CHANGES=0

APT_PACKAGES=(python3 python3-venv python3-dev build-essential pkg-config libasound2-dev
              libsystemd-dev libsndfile1 alsa-utils chrony)
# Raspberry Pi OS only: the GPIO library that works on a Pi 4 and a Pi 5 (the venv sees it
# through --system-site-packages).
APT_OPTIONAL=(python3-lgpio)

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf 'backtrack-install: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }
changed() { CHANGES=$((CHANGES + 1)); say "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a folder"; ROOT=$(realpath -m "$2"); shift ;;
    --root=*) ROOT=$(realpath -m "${1#--root=}") ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    --no-apt) DO_APT=0 ;;
    --no-venv) DO_VENV=0 ;;
    --no-start) DO_START=0 ;;
    --chrony) [ $# -ge 2 ] || die "--chrony needs leader or follower"; CHRONY="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
case "$CHRONY" in ""|leader|follower) ;; *) die "--chrony takes leader or follower" ;; esac
if [ -n "$ROOT" ]; then
  [ "$ROOT" != / ] || die "--root / is the live system: leave --root out"
  DO_APT=0; DO_VENV=0; DO_START=0
fi
[ "$(id -u)" = 0 ] || die "run as root (sudo): it creates a user and writes under /etc"

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

source_stamp() {  # what is being installed: the package sources, hashed
  (cd "$SRC" && find pyproject.toml appliance -name '*.py' -o -name '*.toml' | LC_ALL=C sort \
     | xargs sha256sum) | sha256sum | cut -c1-16
}

# ---- install ----------------------------------------------------------------------------
install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
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

install_venv() {
  local stamp; stamp=$(source_stamp)
  if [ ! -x "$OPT/venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$OPT/venv"
    changed "created the venv $OPT/venv"
  fi
  if [ "$(cat "$OPT/venv/.backtrack-source" 2>/dev/null)" != "$stamp" ]; then
    "$OPT/venv/bin/pip" install -q --upgrade pip
    "$OPT/venv/bin/pip" install -q --upgrade "$SRC"
    echo "$stamp" > "$OPT/venv/.backtrack-source"
    changed "installed the backtrack package ($stamp) into $OPT/venv"
  fi
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
  if [ "$DO_START" = 1 ]; then
    systemctl start backtrack-cpufreq.service
    if [ "$CHANGES" -gt 0 ] && systemctl is-active --quiet backtrack.service; then
      systemctl restart backtrack.service   # new files: run them (not during a show!)
    else
      systemctl start backtrack.service
    fi
    say "status: $(systemctl show -p StatusText --value backtrack.service)"
  fi
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

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
say "$ACTION done${ROOT:+ under $ROOT}: $CHANGES change(s)"
