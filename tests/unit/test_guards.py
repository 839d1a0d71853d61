"""tests/conftest.py's leak guards: a test leaving a thread or a task running fails."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

LEAKY = """
import asyncio
import threading

async def test_leaves_a_task() -> None:
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten")

def test_leaves_a_thread() -> None:
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="forgotten-thread", daemon=True).start()

async def test_clean_task() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    await task

def test_clean_thread() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
"""


def test_leaked_tasks_and_threads_fail_their_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    # The conftest imports its sibling helper module.
    support = CONFTEST.with_name("ci_support.py")
    pytester.makepyfile(ci_support=support.read_text(encoding="utf-8"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        ["*test_leaves_a_task leaks: asyncio tasks left running*forgotten*"]
    )
    result.stdout.fnmatch_lines(
        ["*test_leaves_a_thread leaks: threads left running*forgotten-thread*"]
    )
