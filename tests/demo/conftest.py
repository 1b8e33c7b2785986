"""Fixtures of the demo's tests: the Debian tools that look at a report as a person would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# `make test` installs these first (target report-deps); a bare pytest run installs them
# here when it can, and skips the render tests only where apt cannot be used at all.
PACKAGES = {"chromium": "chromium", "pdftoppm": "poppler-utils"}


def _debian_tool(command: str) -> str:
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{command} is missing and apt-get cannot install it here (not root or no apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", PACKAGES[command]], check=True, env=env, timeout=900
    )
    found = shutil.which(command)
    assert found, f"apt-get installed {PACKAGES[command]} but {command} is still missing"
    return found


@pytest.fixture(scope="session")
def chromium() -> str:
    return _debian_tool("chromium")


@pytest.fixture(scope="session")
def pdftoppm() -> str:
    return _debian_tool("pdftoppm")


def chromium_args(binary: str, profile: Path) -> list[str]:
    """Headless, and quiet: no GPU, no network of its own, no first-run work."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
    ]
