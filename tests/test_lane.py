"""The device lane: what it gathers into one batch, what it keeps apart, and failures."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from clustviz.lane import DeviceLane


class Runner:
    """Runs each batch at once (``len`` of every item's X), recording what it was given."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[tuple[str, dict[str, Any], list[int], list[bool]]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, projector, params, items, hulls) -> Future[list[Any]]:
        with self.lock:
            self.batches.append((projector, params, [len(X) for X, _ in items], list(hulls)))
        done: Future[list[Any]] = Future()
        if self.fail is not None:
            done.set_exception(self.fail)
        else:
            done.set_result([f"{projector}:{len(X)}" for X, _ in items])
        return done


def item(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 2), np.float32), np.zeros(n, np.int64)


def test_items_in_one_window_run_as_one_batch_in_order() -> None:
    runner = Runner()
    lane = DeviceLane(runner, window=0.5, max_batch=64)
    try:
        futures = [
            lane.submit("clusterplot", {"a": 1}, *item(n), hulls=n % 2 == 0) for n in (3, 4, 5)
        ]
        assert [f.result(5) for f in futures] == ["clusterplot:3", "clusterplot:4", "clusterplot:5"]
    finally:
        lane.close()
    assert runner.batches == [("clusterplot", {"a": 1}, [3, 4, 5], [False, True, False])]
    assert (lane.batches_run, lane.items_run) == (1, 3)


def test_different_params_or_projectors_never_share_a_batch() -> None:
    runner = Runner()
    lane = DeviceLane(runner, window=0.3, max_batch=64)
    try:
        futures = [
            lane.submit("clusterplot", {"a": 1}, *item(3)),
            lane.submit("clusterplot", {"a": 2}, *item(4)),
            lane.submit("other", {"a": 1}, *item(5)),
            lane.submit("clusterplot", {"a": 1}, *item(6)),
        ]
        results = [f.result(5) for f in futures]
    finally:
        lane.close()
    assert results == ["clusterplot:3", "clusterplot:4", "other:5", "clusterplot:6"]
    assert sorted(runner.batches, key=repr) == [
        ("clusterplot", {"a": 1}, [3, 6], [True, True]),
        ("clusterplot", {"a": 2}, [4], [True]),
        ("other", {"a": 1}, [5], [True]),
    ]


def test_a_batch_is_cut_at_max_batch() -> None:
    runner = Runner()
    lane = DeviceLane(runner, window=0.3, max_batch=2)
    try:
        futures = [lane.submit("clusterplot", {}, *item(n)) for n in (3, 4, 5, 6, 7)]
        [f.result(5) for f in futures]
    finally:
        lane.close()
    assert [sizes for _, _, sizes, _ in runner.batches] == [[3, 4], [5, 6], [7]]


def test_a_failed_batch_fails_every_item_waiting_on_it() -> None:
    lane = DeviceLane(Runner(fail=RuntimeError("device lost")), window=0.3)
    try:
        futures = [lane.submit("clusterplot", {}, *item(n)) for n in (3, 4, 5)]
        for future in futures:
            with pytest.raises(RuntimeError, match="device lost"):
                future.result(5)
    finally:
        lane.close()


def test_a_runner_that_raises_on_submit_fails_the_batch_and_the_lane_keeps_serving() -> None:
    calls = []

    def runner(projector, params, items, hulls) -> Future[list[Any]]:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("pool saturated")
        done: Future[list[Any]] = Future()
        done.set_result(["ok"] * len(items))
        return done

    lane = DeviceLane(runner, window=0.05)
    try:
        first = lane.submit("clusterplot", {}, *item(3))
        with pytest.raises(RuntimeError, match="pool saturated"):
            first.result(5)
        assert lane.submit("clusterplot", {}, *item(3)).result(5) == "ok"
    finally:
        lane.close()


def test_closing_cancels_what_is_still_waiting() -> None:
    gate = threading.Event()
    started = threading.Event()

    def runner(projector, params, items, hulls) -> Future[list[Any]]:
        started.set()
        gate.wait(5)  # the lane's thread is busy: later items wait in the queue
        done: Future[list[Any]] = Future()
        done.set_result(["ok"] * len(items))
        return done

    lane = DeviceLane(runner, window=0.0)
    first = lane.submit("clusterplot", {}, *item(3))
    assert started.wait(5)
    waiting = lane.submit("clusterplot", {}, *item(4))
    lane.close()
    gate.set()
    assert first.result(5) == "ok"
    assert waiting.cancelled()
