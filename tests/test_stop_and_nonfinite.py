"""Stop requests (signals, the stop file) and the non-finite guard, in one process; the multi-rank
agreement and the real signals through torchrun are in test_fault_injection.py."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from megatron_uniapl import stop
from megatron_uniapl.nonfinite import (
    LoopState,
    NonFiniteError,
    check_streak,
    count_step,
    save_unless_in_streak,
    weights_finite,
)


def test_signals_become_a_request_and_handlers_are_restored(monkeypatch):
    monkeypatch.delenv(stop.STOP_FILE_ENV, raising=False)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop.StopRequest() as request:
        assert request.agreed() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.agreed() == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM changes nothing
        with pytest.raises(KeyboardInterrupt):  # but a Ctrl-C after a request interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with stop.StopRequest() as request:
        os.kill(os.getpid(), signal.SIGINT)
        assert request.agreed() == "SIGINT"


def test_stop_file(tmp_path, monkeypatch):
    flag = tmp_path / "stop-now"
    monkeypatch.setenv(stop.STOP_FILE_ENV, str(flag))
    request = stop.StopRequest()
    assert request.agreed() is None
    flag.touch()
    assert request.agreed() == f"stop file {flag}"


def fake_run(tmp_path, step=3, streak=0):
    loop = LoopState(step=step, nonfinite_in_a_row=streak)
    config = SimpleNamespace(train=SimpleNamespace(steps=10), checkpoint_dir=str(tmp_path / "ckpt"),
                             logging=SimpleNamespace(run_dir=str(tmp_path)))
    return SimpleNamespace(loop=loop, step=step, config=config)


def test_stop_saves_once_then_explains(tmp_path):
    saved = []
    request = stop.StopRequest()
    request.received = "SIGTERM"

    def save(rt):
        saved.append(rt.step)
        return tmp_path / f"iter_{rt.step:07d}"

    with pytest.raises(stop.StopRequested, match=r"stopped on request \(SIGTERM\) at step 3 of 10: saved checkpoint "
                                                 r"iter_0000003; run the same command again to resume"):
        stop.stop_if_requested(request, fake_run(tmp_path), saved_at=2, save=save)
    assert saved == [3]
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["status"] == "stopped" and status["exit_code"] == 75 and status["step"] == 3
    with pytest.raises(stop.StopRequested, match="step 3 was already saved"):
        stop.stop_if_requested(request, fake_run(tmp_path), saved_at=3, save=save)
    with pytest.raises(stop.StopRequested, match="no checkpoint saved \\(the last steps were non-finite\\)"):
        stop.stop_if_requested(request, fake_run(tmp_path, streak=1), saved_at=2, save=save)
    assert saved == [3]
    request.received = None
    stop.stop_if_requested(request, fake_run(tmp_path), saved_at=2, save=save)  # no request: nothing


def test_weights_check_catches_nan_and_overflowing_weights():
    layer = torch.nn.Linear(4, 4)
    assert weights_finite([layer])
    with torch.no_grad():
        layer.weight[0, 0] = 3e19  # finite, but its square overflows float32: a blown-up update
    assert not weights_finite([layer])
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    assert not weights_finite([layer])


def test_streak_counting_stops_after_the_limit_and_blocks_saves(tmp_path):
    good, bad = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.weight.fill_(1e30)
    loop = LoopState()
    saves = []
    rt = SimpleNamespace(loop=loop, step=0)
    for step, (skipped, model) in enumerate([(False, good), (False, bad), (True, bad), (True, bad)], start=1):
        loop.step = rt.step = step
        count_step(loop, skipped, [model])
        check_streak(loop, 3, lambda: None)
        save_unless_in_streak(rt, lambda r: saves.append(r.step))
    assert loop.nonfinite_in_a_row == 3 and saves == [1], "no checkpoint is published during a streak"
    loop.step = 5
    count_step(loop, True, [bad])
    with pytest.raises(NonFiniteError, match=r"steps 2-5 were non-finite \(more than train\.max_nonfinite_steps=3 "
                                             r"in a row\): stopping; .*the newest checkpoint, iter_0000001, predates"):
        check_streak(loop, 3, lambda: tmp_path / "iter_0000001")
    count_step(loop, False, [good])
    assert loop.nonfinite_in_a_row == 0
    assert LoopState(**loop.state_dict()) == loop
