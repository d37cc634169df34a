"""Ctrl-C stays a Ctrl-C: held back while a simulator starts, never recorded as an episode's crash (``sim_eval.envs
.interrupts``). The CLI end to end: ``test_reset_interrupt.py``."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from sim_eval.envs import libero_env
from sim_eval.envs.interrupts import caused_by_interrupt, interrupts_deferred
from sim_eval.runtime.rollout import run_episode


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, whatever the shell that started pytest left (a background job ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _import_failed_by_ctrl_c() -> ImportError:
    """What CPython raises when SIGINT lands in an extension module's init."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt
    except ImportError as err:
        return err


def test_an_exception_raised_from_or_while_handling_ctrl_c_is_the_interrupt():
    assert caused_by_interrupt(_import_failed_by_ctrl_c())
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("argument 1: KeyboardInterrupt") from None  # chain cut: only __context__ is left
    except ValueError as err:
        assert caused_by_interrupt(err)
    assert not caused_by_interrupt(RuntimeError("a real crash"))
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert not caused_by_interrupt(looped)


def test_a_ctrl_c_inside_the_block_is_raised_when_the_block_ends(ctrl_c_raises):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(200_000))  # bytecodes run: Python's handler has had its chance to raise here
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_deferred():  # nothing pending: nothing raised
        sum(range(1000))


def test_a_ctrl_c_is_left_alone_where_sigint_is_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a spawned worker: its parent stops it
    try:
        with interrupts_deferred():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_simulator_start_interrupted_midway_completes_then_raises(monkeypatch, ctrl_c_raises):
    built = []

    class SlowStart:
        def __init__(self, suite, task_id, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C landed in `import mujoco`
            sum(range(200_000))
            built.append((suite, task_id))

        def close(self):
            pass

    monkeypatch.setattr(libero_env, "LiberoEnv", SlowStart)
    envs = libero_env.EnvPerTask("libero_object")
    with pytest.raises(KeyboardInterrupt):
        envs(3)
    assert built == [("libero_object", 3)]


class _Env:
    language, env_seed = "pick", 7

    def reset(self, options=None):
        return {"state": np.zeros(8, np.float32), "images": {}}, {}

    def step(self, action):
        return {"state": np.zeros(8, np.float32), "images": {}}, 0.0, False, False, {}


class _PolicyImportingLazily:
    """A policy whose first inference imports an extension, and a Ctrl-C lands in that import."""

    def reset(self, task):
        pass

    def infer(self, obs):
        raise _import_failed_by_ctrl_c()


def test_an_interrupt_in_disguise_ends_the_episode_unrecorded_and_a_real_crash_is_recorded():
    with pytest.raises(KeyboardInterrupt):
        run_episode(_Env(), _PolicyImportingLazily(), suite="libero_object", task_id=0, episode_index=0, replan_steps=5)

    class Exploding(_PolicyImportingLazily):
        def infer(self, obs):
            raise RuntimeError("weights are NaN")

    record = run_episode(_Env(), Exploding(), suite="libero_object", task_id=0, episode_index=0, replan_steps=5)
    assert record["error"]["type"] == "RuntimeError" and record["success"] is None
