"""The web scorecard: goals with their pacing, KPIs against the previous period, firing
alerts and the pipeline's freshness, as server-rendered pages of the alerts service.

`session` signs the login cookie, `scorecard` reads what a page shows (one shared reading
per few seconds), `charts` draws it as inline SVG, `routes` serves the pages."""
