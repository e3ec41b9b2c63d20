"""What the index role has read, per (stream, window): the records moments are built from.

`fw.features` carries one record per (stream, modality, window) and `fw.alerts` the alerts;
a moment spans several windows and all their modalities. Keeping every record here, keyed
by what it is about, makes the moments a function of the records alone: a record read
again (a restart, a rebalance, a replay) overwrites itself, and the block it falls in is
rebuilt to the same moments. SQLite in the index directory: local, transactional, and read
by the block (stream, time range) through its primary key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from streams.models import WINDOW_FEATURES, Alert, WindowFeatures

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
  stream TEXT NOT NULL, window_start INTEGER NOT NULL, modality TEXT NOT NULL, site TEXT NOT NULL,
  json TEXT NOT NULL, PRIMARY KEY (stream, window_start, modality)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
  stream TEXT NOT NULL, window_start INTEGER NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,
  PRIMARY KEY (stream, window_start, id)
) WITHOUT ROWID;
"""


class WindowLog:
    """Window records and alerts by (stream, window start), idempotent per record."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "windows.sqlite3", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def put_features(self, features: WindowFeatures) -> bool:
        """Keep one record; False when the same record was already kept (nothing to rebuild)."""
        text = features.model_dump_json()
        key = (features.stream, features.window_start, features.modality)
        row = self._db.execute(
            "SELECT json FROM parts WHERE stream = ? AND window_start = ? AND modality = ?", key
        ).fetchone()
        if row is not None and row[0] == text:
            return False
        self._db.execute("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?)", (*key, features.site, text))
        return True

    def put_alert(self, alert: Alert) -> list[str]:
        """Keep an alert under each of its streams; the streams it was new for."""
        changed = []
        text = alert.model_dump_json()
        for stream in alert.streams:
            key = (stream, alert.window_start, alert.id)
            row = self._db.execute(
                "SELECT json FROM alerts WHERE stream = ? AND window_start = ? AND id = ?", key
            ).fetchone()
            if row is None or row[0] != text:
                self._db.execute("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?)", (*key, text))
                changed.append(stream)
        return changed

    def block(self, stream: str, start_ms: int, end_ms: int) -> tuple[list[WindowFeatures], list[Alert]]:
        """The stream's records and alerts of windows starting in [start_ms, end_ms)."""
        parts = []
        for (text,) in self._db.execute(
            "SELECT json FROM parts WHERE stream = ? AND window_start >= ? AND window_start < ? ORDER BY window_start",
            (stream, start_ms, end_ms),
        ):
            try:
                parts.append(WINDOW_FEATURES.validate_json(text))
            except ValidationError:  # written by another version: its block is built without it
                continue
        alerts = []
        for (text,) in self._db.execute(
            "SELECT json FROM alerts WHERE stream = ? AND window_start >= ? AND window_start < ?",
            (stream, start_ms, end_ms),
        ):
            try:
                alerts.append(Alert.model_validate_json(text))
            except ValidationError:
                continue
        return parts, alerts

    def commit(self) -> None:
        self._db.commit()

    def delete_before(self, window_start: int) -> int:
        """Forget records of windows starting before `window_start` (retention)."""
        gone = self._db.execute("DELETE FROM parts WHERE window_start < ?", (window_start,)).rowcount
        gone += self._db.execute("DELETE FROM alerts WHERE window_start < ?", (window_start,)).rowcount
        self._db.commit()
        return int(gone)

    def streams(self) -> Sequence[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT stream FROM parts ORDER BY stream")]

    def close(self) -> None:
        self._db.commit()
        self._db.close()
