"""Running a command for which file permissions hold: what a read-only folder means to a user.

Root ignores permission bits, and tests run as root in CI. Dropping the two capabilities that
override them (``setpriv --bounding-set -dac_override,-dac_read_search``) makes a root process
obey ``chmod`` like any user; a non-root process obeys it already.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest


def command(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(args)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to hold")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *args]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command(args), capture_output=True, text=True, **kw)


def make_read_only(*paths) -> None:
    for p in paths:
        mode = os.stat(p).st_mode
        os.chmod(p, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(*paths) -> None:
    for p in paths:
        os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
