#!/usr/bin/env bash
# Installs the Debian packages livegen needs, or says exactly what to install.
#   libfluidsynth3       the built-in synth's engine (pyfluidsynth loads it)
#   timgm6mb-soundfont   a General MIDI SoundFont for the built-in synth
#   libportaudio2        audio output (sounddevice loads it)
#   jackd2               JACK: virtual MIDI ports and audio where there is no ALSA sequencer; the tests use it
#   sox                  audio checks in the tests and benchmarks
set -euo pipefail
packages=(libfluidsynth3 timgm6mb-soundfont libportaudio2 jackd2 sox)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "livegen setup: not a Debian-like system; install by hand: FluidSynth 2, a General MIDI SoundFont," >&2
  echo "  PortAudio and JACK (macOS: brew install fluid-synth portaudio jack)." >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "livegen setup: missing Debian packages: ${missing[*]}" >&2
  echo "  install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "livegen setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# jackd2 asks whether to enable realtime scheduling; answer for it.
echo "jackd2 jackd/tweak_rt_limits boolean false" | "${sudo[@]}" debconf-set-selections 2>/dev/null || true
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
