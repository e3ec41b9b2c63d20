"""The fusewatch daemon: its stages, how they run, and the command line.

One folder per job (docs/design.md, "Module map"); imports only run down this list:

- `cli/`: the `fusewatch` command line;
- `runtime/`: running the roles in one supervised process, and the embedded services;
- `evaluation/`: scoring alerts against labelled recordings;
- `analyze/`, `fuse/`, `console/`: the analyze and fuse stages, and the operators' console;
- `telemetry/`: metrics, status and logs, which every stage reports through.

Below the daemon: `streams/` (wire format, Kafka, decode, sinks), `detectors/`, `config/`.
"""
