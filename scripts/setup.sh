#!/usr/bin/env bash
# One-time (and idempotent) setup: system libraries the Python packages load at
# run time, a virtual environment, and the project with its test extras.
# Fast when nothing changed: the stamp file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.installed"
EXTRAS="${EXTRAS:-test,bench}"

# Shared library soname -> Debian package that provides it.
# libopus for opuslib, PortAudio for sounddevice, the rest for PyQt6 (even offscreen).
LIBS=(
  "libopus.so.0:libopus0"
  "libportaudio.so.2:libportaudio2"
  "libEGL.so.1:libegl1"
  "libGL.so.1:libgl1"
  "libxkbcommon.so.0:libxkbcommon0"
  "libfontconfig.so.1:libfontconfig1"
  "libdbus-1.so.3:libdbus-1-3"
  "libxkbcommon-x11.so.0:libxkbcommon-x11-0"
  "libxcb-cursor.so.0:libxcb-cursor0"
  "libxcb-icccm.so.4:libxcb-icccm4"
  "libxcb-keysyms.so.1:libxcb-keysyms1"
  "libxcb-shape.so.0:libxcb-shape0"
  "libxcb-render-util.so.0:libxcb-render-util0"
  "libxcb-image.so.0:libxcb-image0"
)

missing=()
have_libs=$(/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true)
for entry in "${LIBS[@]}"; do
  so=${entry%%:*}; pkg=${entry##*:}
  grep -q "$so" <<<"$have_libs" || missing+=("$pkg")
done
# glib's package name changed in Debian 13 (libglib2.0-0t64); ask apt for whichever exists.
if ! grep -q "libglib-2.0.so.0" <<<"$have_libs"; then
  missing+=("libglib2.0-0")
fi
if [ ! -x "$VENV/bin/python" ]; then
  # Debian splits venv support off python3; a trial venv tells whether it is there.
  trial=$(mktemp -d)
  if ! python3 -m venv "$trial/v" >/dev/null 2>&1; then
    missing+=("python3-venv")
  fi
  rm -rf "$trial"
fi
# espeak-ng speaks real-ish sentences for bench/input_choice.py (how the voice activity
# detector and the noise suppressor were chosen); without it that benchmark falls back
# to the generated speech-like signal only.
if ! command -v espeak-ng >/dev/null 2>&1; then
  missing+=("espeak-ng")
fi
# pesq (the speech-quality score of the benchmarks) ships as source only: it needs a
# C compiler and the Python headers.
if ! command -v cc >/dev/null 2>&1; then
  missing+=("gcc" "libc6-dev")
fi
if ! python3 -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" 2>/dev/null; then
  missing+=("python3-dev")
fi

# The device-path test and benchmark (bench/pulse.py) run the client through a private
# PulseAudio server: the server, its command-line tools, and ALSA's pulse plugin, which
# is how PortAudio (ALSA host API) reaches it.
command -v pulseaudio >/dev/null 2>&1 || missing+=("pulseaudio")
command -v pacat >/dev/null 2>&1 || missing+=("pulseaudio-utils")
[ -e /usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so ] \
  || ls /usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so >/dev/null 2>&1 \
  || missing+=("libasound2-plugins")

# The global push-to-talk key's tests (tests/test_ui_global_hotkey.py) grab keys on a
# private X server and type on it through XTest; the key itself needs Xlib.
command -v Xvfb >/dev/null 2>&1 || missing+=("xvfb")
grep -q "libX11.so.6" <<<"$have_libs" || missing+=("libx11-6")
grep -q "libXtst.so.6" <<<"$have_libs" || missing+=("libxtst6")

# The relay cluster's tests and benchmark (docs/cluster.md) start a private redis-server.
command -v redis-server >/dev/null 2>&1 || missing+=("redis-server")

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "setup: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing system libraries (${missing[*]}) and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # libglib2.0-0 is a virtual package on newer Debian; apt resolves it to the t64 one.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi

want="$(sha256sum pyproject.toml | cut -c1-16) extras=$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "setup: installing the project and its Python packages ($EXTRAS)"
  # Build backends are chatty on stderr; keep it in a log and show it only on failure.
  log="$VENV/setup.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip \
         && "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: installing the Python packages failed (log above, also in $log)" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi
