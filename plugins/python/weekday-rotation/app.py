"""Rotation schedule `weekday-rotation`, written in Python (componentize-py).

Rotates `period_days` (default 30) after the last rotation or creation, moved forward to the
next weekday (Monday-Friday, UTC) at `hour` (default 9) so rotations happen in office hours.
Shows that tenants are not tied to Rust: the component implements the same
`keyplane:plugin/rotation-schedule@0.1.0` world as the Rust plugins.
"""

from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

DAY = 86_400


class Schedule(exports.Schedule):
    def next_rotation(self, config: List[Tuple[str, str]], info: types.KeyInfo, now: int) -> Optional[int]:
        settings = dict(config)
        try:
            period = int(settings.get("period_days", "30")) * DAY
            hour = int(settings.get("hour", "9"))
        except ValueError:
            raise Err("config `period_days` and `hour` must be integers")
        if period <= 0 or not 0 <= hour <= 23:
            raise Err("config needs period_days > 0 and 0 <= hour <= 23")
        due = (info.last_rotation if info.last_rotation is not None else info.created_at) + period
        day_start = due - due % DAY
        candidate = day_start + hour * 3600
        if candidate < due:
            candidate += DAY
        # 1970-01-01 was a Thursday: weekday index 0 = Thursday ... 2 = Saturday, 3 = Sunday.
        while (candidate // DAY) % 7 in (2, 3):
            candidate += DAY
        log.log(log.Level.DEBUG, f"key {info.key_id}: due {due}, scheduled {candidate}")
        return candidate
