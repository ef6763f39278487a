"""A process forked after a client started (gunicorn --preload, multiprocessing's fork)
gets a clear error from every call instead of waiting for ever on threads it does not
have."""

from __future__ import annotations

import os
import signal
import time

import quiver


def test_calls_in_a_fork_fail_fast_and_name_the_fix(cluster, client):
    client.list_views()  # the runtime is running in this process
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 0
        try:
            client.get_online_features(["card_stats:spend"], keys=[1])
            code = 2
        except quiver.FailedPrecondition as e:
            code = 0 if "after forking" in str(e) else 3
        except BaseException:
            code = 4
        try:
            quiver.Client(cluster.seeds())
            code = code or 5
        except quiver.FailedPrecondition:
            pass
        except BaseException:
            code = code or 6
        os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("a call in the forked child hung")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    # The parent is unaffected.
    assert client.get_online_features(["card_stats:spend"], keys=[1]).to_dict()["card"] == [1]
