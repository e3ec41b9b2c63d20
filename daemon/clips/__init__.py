"""The clips role: an MP4 of every alert's streams, remuxed from the packets on `fw.media`."""
