"""`python -m services.demo`: the same as `pacekeeper demo`."""

from services.demo.orchestrator import run_demo
from services.demo.settings import DemoSettings

raise SystemExit(run_demo(DemoSettings()))
