"""Detectors: object detection, speech transcription and audio analysis behind protocols.

Implementations are chosen by the config's `type:` through `detectors.registry`. This
package imports only `streams.models` from fusewatch, never the daemon.
"""
