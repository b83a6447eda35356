"""kv.watchdog: a write's deadline fires, a disarmed one never does, and arming a deadline later
than the earliest one does not wake the watchdog's thread (one write, one wake-up would cost a
thread switch per write)."""

import threading
import time

from kv.watchdog import Watchdog


class CountingCondition(threading.Condition):
    def __init__(self):
        super().__init__()
        self.notified = 0

    def notify(self, n=1):
        self.notified += 1
        super().notify(n)


def wait_fired(deadline, bound: float = 10.0) -> bool:
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if deadline.fired:
            return True
        time.sleep(0.01)
    return deadline.fired


def test_only_a_new_earliest_deadline_wakes_the_thread():
    w = Watchdog()
    w._cond = CountingCondition()
    seen = []
    deadlines = []
    for timeout in (30.0, 40.0, 50.0, 20.0, 45.0):
        deadlines.append(w.arm(timeout))
        seen.append(w._cond.notified)
    assert seen == [1, 1, 1, 2, 2]
    assert not any(w.disarm(d) for d in deadlines)


def test_an_earlier_deadline_armed_behind_a_later_one_fires():
    w = Watchdog()
    late = w.arm(30.0)
    early = w.arm(0.05)
    assert wait_fired(early), "the earlier deadline did not fire"
    assert w.disarm(early) is True
    assert w.disarm(late) is False


def test_a_disarmed_deadline_never_fires():
    w = Watchdog()
    gone = w.arm(0.05)
    assert w.disarm(gone) is False
    marker = w.arm(0.1)
    assert wait_fired(marker)
    assert not gone.fired
    w.disarm(marker)
