"""The alerts service's fixtures (a webhook receiver, the service as a process, applying a
config), shared with tests/alerts: the chaos tests run it on the cluster too."""

from tests.alerts.conftest import (  # noqa: F401
    alerts_env,
    alerts_settings,
    apply_yaml,
    receiver,
    sessions,
    start_service,
)
