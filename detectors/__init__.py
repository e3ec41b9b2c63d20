"""Detectors: object detection, speech transcription and audio analysis behind protocols.

Implementations are chosen by the config's `type:` through `detectors.registry` (the one
module that reads `config.schema`). The package imports `streams.models` and `config`
from fusewatch, never the daemon.
"""
