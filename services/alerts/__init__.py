"""The alerts service: threshold rules and SMART goals that page the right people exactly once.

A pipeline of small stages, as in Alertmanager: evaluation (pure) → lifecycle → dispatch
(grouping) → silences/acknowledgements → notify (one module per channel).
"""
