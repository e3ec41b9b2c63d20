"""The analyze stage: `fw.media` records in, one `WindowFeatures` per stream, modality and window out.

`worker` routes decoded items to one analyzer per modality and stream (`video`, `audio`,
`speech_windows`; `context` is what they share) and wires the stage to Kafka; `batcher`
shares the detector between streams; `video_windows` and `speech` build the features.
"""
