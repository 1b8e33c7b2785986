"""Goal pacing in the review: the alerts service's own pacing, read back over any period.

The review must say what `GET /v1/goals` says for the running period, so it does not redo
the math: `services.alerts.evaluation.goals.pace` decides target, expected value, projection
and status. What a look back adds is only vocabulary — a closed period that fell short is
`missed`, and a goal without numbers says `no_data` instead of guessing.
"""

from __future__ import annotations

from enum import StrEnum

from services.alerts.evaluation.goals import (
    CUMULATIVE_KINDS,
    GoalPeriod,
    Pace,
    attainment,
    goal_period,
    pace,
)

__all__ = [
    "CUMULATIVE_KINDS",
    "GoalPeriod",
    "Pace",
    "ReviewStatus",
    "attainment",
    "goal_period",
    "pace",
    "review_status",
]


class ReviewStatus(StrEnum):
    achieved = "achieved"
    on_track = "on_track"
    at_risk = "at_risk"
    off_track = "off_track"
    missed = "missed"  # the period closed short of the target
    no_data = "no_data"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


def review_status(result: Pace) -> ReviewStatus:
    if result.value is None or result.target is None:
        return ReviewStatus.no_data
    if result.elapsed >= 1.0 and result.status.value == "off_track":
        return ReviewStatus.missed
    return ReviewStatus(result.status.value)
