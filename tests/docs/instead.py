"""What runs instead of a documented block that cannot run here as written.

A block above which the documentation says `<!-- docs-test: instead: NAME: why -->` is not run
as written: `CHECKS[NAME](block, workdir, env)` runs the nearest thing that is possible here. Each
check first asserts that the block still holds the commands it knows how to stand in for, so a
changed command fails until its check is changed with it. Add a check here for a new kind of
block; prefer the generic ones (`collect-only`, `help`) when they fit.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.browser import free_port
from tests.support.docs import Block
from tests.support.serve import serve_and_check

Check = Callable[[Block, Path, dict], None]
CHECKS: dict[str, Check] = {}
TIMEOUT_S = 600


def check(name: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS[name] = function
        return function

    return register


def commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    found = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#\s.*$", "", line).strip()  # a trailing `# comment`
        if line and not line.startswith("#"):
            found.append(line)
    return found


def run(command: str, workdir: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, (
        f"`{command}` exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
        f"--- stderr\n{done.stderr[-3000:]}"
    )
    return done


def _venv_is_current(workdir: Path, env: dict) -> None:
    """run.sh and test.sh install first; a test must not: the venv must already be current."""
    done = subprocess.run(["bash", "scripts/setup_env.sh", "--check", "dev"], cwd=workdir,
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr + " (bash test.sh does it before the tests)"


_collected: set[tuple[Path, str]] = set()  # (working copy, command): collecting takes seconds


def _collect_only(command: str, workdir: Path, env: dict) -> None:
    if (workdir, command) in _collected:
        return
    done = run(f"{command} --collect-only -q", workdir, env)
    assert re.search(r"^\d+(/\d+)? tests? collected", done.stdout, re.M), done.stdout[-2000:]
    _collected.add((workdir, command))


@check("setup")
def setup(block: Block, workdir: Path, env: dict) -> None:
    """`bash run.sh` serves until stopped, and `bash test.sh` would run this suite inside itself.

    Nearest: run.sh itself, for real, in the working copy whose `store_data` holds every default
    run (so its install step finds the venv current, and its defaults step finds all the
    default runs already there), until the app serves; its Runs page is read in Chromium and
    the server stopped. test.sh runs with `--collect-only -q`: its install and Chromium checks,
    then collecting every test without running them.
    """
    assert commands(block.code) == ["bash run.sh", "bash test.sh"], block.code
    _venv_is_current(workdir, env)
    port = free_port()
    text = serve_and_check(["bash", "run.sh"], port, workdir, {**env, "PORT": str(port)})
    n_runs = len([p for p in (workdir / "store_data" / "runs").iterdir() if p.is_dir()])
    assert f"{n_runs} of {n_runs} runs" in text or not text, text[:2000]
    _collect_only("bash test.sh", workdir, env)


@check("collect-only")
def collect_only(block: Block, workdir: Path, env: dict) -> None:
    """Commands that run the test suite (`bash test.sh ...`) would run it inside itself.

    Nearest: each command as written plus `--collect-only -q`: the same install check, Chromium
    check, options and marker expression, and every selected test collected, none run.
    """
    found = commands(block.code)
    assert found and all(c.startswith("bash test.sh") for c in found), block.code
    _venv_is_current(workdir, env)
    for command in found:
        _collect_only(command, workdir, env)


@check("help")
def help_only(block: Block, workdir: Path, env: dict) -> None:
    """Commands that take minutes by design (benchmarks): each starts, with `--help` appended,
    which imports the script and parses its options, and must print its usage."""
    found = commands(block.code)
    assert found, block.code
    for command in found:
        done = run(f"{command} --help", workdir, env)
        assert done.stdout.startswith("usage:"), done.stdout[:500]
