"""Clock ticks: one message per owned partition per interval on the tick topic.

Faust timers cannot write tables (faust-streaming #497), so work that must happen on a clock (flushing
idle partitions, expiring panes, evaluating rules) runs in stream iteration of these tick messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.app import Pulse


def register(pulse: Pulse) -> None:
    """Register the tick timer on the pulse app."""
    ticks_name = pulse.ticks_name

    @pulse.app.timer(pulse.config.ingest.flush_interval, name="ticks")
    async def tick() -> None:
        if not pulse.is_ready():
            return
        for tp in pulse.app.assignor.assigned_actives():
            if tp.topic == ticks_name:
                pulse.ticks.send_soon(value=b"", partition=tp.partition)
