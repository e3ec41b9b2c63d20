"""The analyze stage: `fw.media` records in, one `WindowFeatures` per stream, modality and window out.

`worker` routes decoded items and emits windows; `batcher` shares the detector between
streams; `video_windows` and `speech` hold the per-window state of video and speech.
"""
