#!/usr/bin/python3
"""A local RTSP camera for tests: serves a media file, looping, on 127.0.0.1:PORT/PATH.

Runs under Debian's system Python (it needs `gi` for gst-rtsp-server, which the project's
virtualenv does not have): `/usr/bin/python3 rtsp_server.py PORT PATH FILE`. Prints
`READY rtsp://…` once listening. ffmpeg plays FILE in real time, looping, without
re-encoding, as MPEG-TS over a private loopback UDP port; the RTSP server reads that like a
live camera (looping inside the RTSP media itself breaks its PLAY seek). ffmpeg is tied to
this process with PR_SET_PDEATHSIG, so killing the server kills the feed too.
Debian packages: gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-{base,good,bad} python3-gi.
"""

import ctypes
import signal
import socket
import subprocess
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PR_SET_PDEATHSIG = 1
# Unlimited queues: the default 1 s queues stall preroll on low-frame-rate files.
QUEUE = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=10000000000"
H264 = "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
AAC = "aacparse ! rtpmp4gpay name=pay1 pt=97"


def main() -> int:
    port, path, media = sys.argv[1], sys.argv[2].strip("/"), sys.argv[3]
    audio = "--no-audio" not in sys.argv
    Gst.init(None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        feed_port = probe.getsockname()[1]
    libc = ctypes.CDLL("libc.so.6")
    feeder = subprocess.Popen(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            media,
            "-map",
            "0:v:0",
            *(["-map", "0:a:0"] if audio else []),
            "-c",
            "copy",
            "-f",
            "mpegts",
            f"udp://127.0.0.1:{feed_port}?pkt_size=1316",
        ],
        preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL),
    )
    launch = (
        f"( udpsrc address=127.0.0.1 port={feed_port} buffer-size=4194304 "
        f'caps="video/mpegts,systemstream=(boolean)true" ! tsdemux name=d d. ! {QUEUE} ! {H264} '
        + (f"d. ! {QUEUE} ! {AAC} " if audio else "")
        + ")"
    )
    server = GstRtspServer.RTSPServer(address="127.0.0.1", service=str(port))
    factory = GstRtspServer.RTSPMediaFactory(launch=launch, shared=True)
    server.get_mount_points().add_factory("/" + path, factory)
    if not server.attach(None):
        feeder.kill()
        print(f"cannot bind 127.0.0.1:{port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{port}/{path}", flush=True)
    loop.run()
    feeder.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
