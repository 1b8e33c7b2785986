"""Pure evaluation logic: rule conditions, the alert lifecycle and goal pacing.

Nothing here does I/O; the evaluator feeds these functions KPI values it read through
`kpi_value` and persists what they return.
"""
