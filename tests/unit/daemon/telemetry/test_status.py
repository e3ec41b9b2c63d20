"""The roles panel: live processes as they are, a role without one once by when it left, old records gone."""

from __future__ import annotations

from daemon.telemetry.status import ROLE_EXPIRY_MS, STALE_MS, RoleStatus, role_rows

NOW = 1_700_000_000_000
MIN = 60_000


def _role(
    role: str, process: str, updated_ms: int, departed_ms: int | None = None, state: str = "running"
) -> RoleStatus:
    return RoleStatus(
        role=role,
        process=process,
        state="stopped" if departed_ms is not None else state,
        restarts=0,
        last_error="",
        updated_ms=updated_ms,
        departed_ms=departed_ms,
    )


def _shown(statuses: list[RoleStatus], now: int = NOW) -> list[tuple[str, str, bool, int | None, bool]]:
    return [(r["role"], r["process"], r["live"], r["gone_ms"], r["stale"]) for r in role_rows(statuses, now)]


def test_a_role_with_a_live_process_shows_only_its_live_processes() -> None:
    earlier_runs = [
        _role("analyze", "host:10", NOW - 30 * MIN, departed_ms=NOW - 5 * MIN),
        _role("analyze", "host:11", NOW - 3 * MIN),  # killed: went stale without departing
        _role("fuse", "host:10", NOW - 5 * MIN, departed_ms=NOW - 5 * MIN),
    ]
    running = [_role("analyze", "host:20", NOW - 1000), _role("analyze", "host:21", NOW), _role("fuse", "host:20", NOW)]
    assert _shown(earlier_runs + running) == [
        ("analyze", "host:20", True, None, False),
        ("analyze", "host:21", True, None, False),
        ("fuse", "host:20", True, None, False),
    ]


def test_a_role_without_a_live_process_is_shown_once_by_the_process_that_left_last() -> None:
    departed = _role("fuse", "host:10", NOW - 2 * MIN, departed_ms=NOW - 2 * MIN)
    silent = _role("fuse", "host:11", NOW - 1 * MIN)
    assert _shown([departed, silent]) == [("fuse", "host:11", False, NOW - MIN, True)], "the silent one left last"
    assert _shown([departed, _role("fuse", "host:11", NOW - 3 * MIN)]) == [
        ("fuse", "host:10", False, NOW - 2 * MIN, False)
    ]
    row = role_rows([departed], NOW)[0]
    assert row["state"] == "stopped" and row["departed_ms"] == NOW - 2 * MIN


def test_a_record_goes_stale_after_stale_ms_and_is_dropped_after_the_expiry() -> None:
    fresh = _role("web", "host:1", NOW - STALE_MS)
    assert fresh.gone_since(NOW) is None and _shown([fresh])[0][2] is True
    assert fresh.gone_since(NOW + 1) == NOW - STALE_MS
    departed = _role("web", "host:1", NOW, departed_ms=NOW)
    assert departed.gone_since(NOW) == NOW, "departed at once, however fresh"
    assert not departed.expired(NOW + ROLE_EXPIRY_MS) and departed.expired(NOW + ROLE_EXPIRY_MS + 1)
    assert _shown([departed], NOW + ROLE_EXPIRY_MS + 1) == []
    last_heard = NOW - STALE_MS
    assert _shown([fresh], last_heard + ROLE_EXPIRY_MS) == [("web", "host:1", False, last_heard, True)]
    assert _shown([fresh], last_heard + ROLE_EXPIRY_MS + 1) == [], "expiry counts from the last report"


def test_a_record_written_before_departures_existed_still_reads() -> None:
    old = RoleStatus.model_validate_json(
        '{"role": "fuse", "process": "h:1", "state": "running", "restarts": 0, "last_error": "", "updated_ms": 5}'
    )
    assert old.departed_ms is None and old.gone_since(5 + STALE_MS + 1) == 5
