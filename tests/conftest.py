"""Suite-wide guards.

- Tests that start nodes only run inside an isolated network namespace.
- No node bootstraps into the public DHT (CHINWAG_DHT_BOOTSTRAP is empty).
- Under CI=true a skipped LAN or browser test is a failure (ci_support.py).
- A test that leaves a thread or an asyncio task running fails (at teardown), as in
  python-zeroconf's conftest: a leak in one test otherwise shows up as a flaky other.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import os
import socket
import threading
import time
from collections.abc import Generator

import pytest

from ci_support import ci_skip_as_failure

# No node started by a test may ever join the public DHT: without --dht-bootstrap, the
# CLI's default bootstrap list is this (none), inherited by every process a test starts.
os.environ["CHINWAG_DHT_BOOTSTRAP"] = ""


def isolated_network() -> bool:
    """Return True if this process sees no network interface but loopback."""
    return all(name == "lo" for _, name in socket.if_nameindex())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to start real nodes where their beacons could reach a real network."""
    dirs = ("/integration/", "/lan/", "/lab/", "/tui/")
    needs_net = [i for i in items if any(d in str(i.path) for d in dirs)]
    if needs_net and not isolated_network() and not os.environ.get("CHINWAG_HOST_NET_OK"):
        pytest.exit(
            "integration and LAN tests start real nodes: run them inside a fresh network "
            "namespace (scripts/test.sh does: unshare -n), never on the host network",
            returncode=2,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true, turn a skipped LAN or browser test (for any reason) into a failure."""
    report = yield
    ci_skip_as_failure(item, report)
    return report


# --- leak guards -----------------------------------------------------------------

#: How long teardown waits for a leftover thread to finish on its own (a reader
#: thread sees end of file just after its process is gone).
THREAD_GRACE_S = 2.0

_THREADS_AFTER_SETUP = pytest.StashKey[set[threading.Thread]]()

#: Tasks still pending when a test's event loop was torn down (asyncio.Runner cancels
#: them silently; here they are noted first).
_leaked_tasks: list[str] = []
_cancel_all_tasks = asyncio.runners._cancel_all_tasks  # type: ignore[attr-defined]


def _note_and_cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    _leaked_tasks.extend(_describe(task) for task in asyncio.all_tasks(loop) if not task.done())
    _cancel_all_tasks(loop)


def _describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} running {name}"


asyncio.runners._cancel_all_tasks = _note_and_cancel_all_tasks  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    _leaked_tasks.clear()
    yield
    # Taken after setup: threads of module- or session-scoped fixtures are not the test's.
    item.stash[_THREADS_AFTER_SETUP] = set(threading.enumerate())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    problems = []
    if _leaked_tasks:
        problems.append(f"asyncio tasks left running: {sorted(_leaked_tasks)}")
        _leaked_tasks.clear()
    before = item.stash.get(_THREADS_AFTER_SETUP, None)
    if before is not None:
        deadline = time.monotonic() + THREAD_GRACE_S
        left = []
        for thread in set(threading.enumerate()) - before:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                left.append(thread.name)
        if left:
            problems.append(f"threads left running: {sorted(left)}")
    if problems:
        pytest.fail(f"{item.nodeid} leaks: " + "; ".join(problems), pytrace=False)
