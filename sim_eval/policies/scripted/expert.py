"""The scripted expert: a policy that plans from the task's BDDL goal and privileged simulator state.

It speaks the ordinary policy protocol (``reset`` / ``infer``) and sends the same 7-D delta end-effector actions a
learned policy sends, so a run of it exercises the identical env, action and success path. The only extra it needs is
``obs["privileged"]`` (``sim_eval.envs.privileged.privileged_observation``), which the env adds when asked to.

The goal's predicates are turned into an ordered list of skills (open what must be open, move objects, switch things
on or off, close last), each retried up to ``max_attempts`` times until LIBERO's own verdict on that predicate holds.
One action is returned per call: the expert re-plans from fresh state every control step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim_eval.policies.base import TaskContext, Timer
from sim_eval.policies.scripted import articulated, enclosure, skills, world
from sim_eval.policies.scripted.motion import OPEN, Servo

# The order goal predicates are worked on: a container is opened before something is put in it and closed after.
_ORDER = {"open": 0, "on": 1, "in": 1, "turnon": 2, "turnoff": 2, "close": 3}


class MissingPrivilegedState(RuntimeError):
    pass


def plan(goal: list[tuple[str, ...]], p: dict) -> list[tuple[int, tuple[str, ...]]]:
    """Goal predicates -> (index into the goal, step) in execution order. Putting something into a closed drawer
    gets an ``open`` step first (libero_goal's "open the top drawer and put the bowl inside" only states ``In``); it
    names the object too, ``("open", region, object)``: the drawer is opened only as far as that object needs."""
    steps: list[tuple[int, tuple[str, ...]]] = []
    for i, pred in enumerate(goal):
        if pred[0] in ("in", "on") and articulated.is_closed_region(p, pred[2]):
            steps.append((-1, ("open", pred[2], pred[1])))
        steps.append((i, pred))
    return sorted(steps, key=lambda s: _ORDER.get(s[1][0], 1))


def shared_slots(goal: list[tuple[str, ...]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(object, target) -> (k, n) for the n objects the goal puts ``on`` one target, so they get separate spots."""
    by_target: dict[str, list[str]] = {}
    for pred in goal:
        if pred[0] == "on":
            by_target.setdefault(pred[2], []).append(pred[1])
    return {(o, t): (k, len(objs)) for t, objs in by_target.items() for k, o in enumerate(objs)}


class ScriptedExpert:
    """Privileged scripted expert for LIBERO.

    Args:
        speed: cap on the translation command's norm (1.0 = the controller's full 5 cm goal offset per step).
        max_attempts: how many times a goal predicate is attempted (a failed grasp or a drop is retried).
    """

    name = "scripted"

    def __init__(self, speed: float = 1.0, max_attempts: int = 3):
        if not 0.05 <= speed <= 1.0:
            raise ValueError(f"ScriptedExpert speed={speed}: must be in [0.05, 1.0]")
        if max_attempts < 1:
            raise ValueError(f"ScriptedExpert max_attempts={max_attempts}: must be >= 1")
        self.speed, self.max_attempts = float(speed), int(max_attempts)
        self._ctx: skills.Context | None = None
        self._program = None

    def reset(self, task: TaskContext) -> None:
        self._ctx = skills.Context(servo=Servo(speed=self.speed))
        self._program = None

    def _run(self):
        ctx = self._ctx
        goal = ctx.p["goal"]
        ctx.slots = shared_slots(goal)
        for index, pred in plan(goal, ctx.p):
            for attempt in range(self.max_attempts):
                if self._holds(index, pred):
                    break
                ctx.retries = attempt
                yield from self._skill(index, pred)
            else:
                ctx.phase = f"gave_up:{'/'.join(pred)}"
        yield from skills.hold(ctx)

    def _holds(self, index: int, pred: tuple[str, ...]) -> bool:
        if index >= 0:
            return bool(self._ctx.p["goal_status"][index])
        return articulated.is_open(self._ctx.p, pred[1], self._upto(pred))  # an implied "open" step

    def _upto(self, pred: tuple[str, ...]) -> float:
        """How far an implied "open" step opens its drawer: as far as the object going in needs."""
        return articulated.fit_fraction(self._ctx.p, pred[1], pred[2]) if len(pred) > 2 else 1.0

    def _skill(self, index: int, pred: tuple[str, ...]):
        ctx = self._ctx

        def done(p) -> bool:
            return bool(p["goal_status"][index]) if index >= 0 else articulated.is_open(p, pred[1], upto)

        upto = self._upto(pred) if index < 0 else 1.0
        kind = pred[0]
        way = enclosure.opening(ctx.p, pred[2]) if kind == "in" else None
        if way is not None:
            yield from enclosure.put_inside(ctx, pred[1], pred[2], way)
        elif kind in ("on", "in") and skills.is_pushable(ctx.p, pred[1]):
            slide = skills.drag if world.is_dish(ctx.p["objects"][pred[1]]) else skills.push
            yield from slide(ctx, pred[1], kind, pred[2])
        elif kind in ("on", "in"):
            if (yield from skills.pick(ctx, pred[1])):
                yield from skills.place(ctx, pred[1], kind, pred[2])
            else:
                yield from skills.actuate(ctx, OPEN)  # let go of whatever the failed grasp holds, then retry
        elif kind in ("open", "close"):
            yield from articulated.slide_or_swing(ctx, pred[1], kind == "open", done, upto)
        elif kind in ("turnon", "turnoff"):
            yield from articulated.turn_knob(ctx, pred[1], kind == "turnon", done)
        else:
            raise ValueError(f"scripted expert: no skill for goal predicate {pred}")

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        with Timer() as timer:
            if "privileged" not in obs:
                raise MissingPrivilegedState(
                    "ScriptedExpert needs obs['privileged']: run it with the env's privileged observation on"
                    " (policy=scripted turns it on)"
                )
            if self._ctx is None:
                self.reset(TaskContext("", 0, str(obs.get("instruction", "")), 0, 0))
            self._ctx.p = obs["privileged"]
            if self._program is None:
                self._program = self._run()
            action = np.asarray(next(self._program), dtype=np.float64)
        return {
            "actions": action[None, :],
            "info": {"infer_ms": timer.ms, "phase": self._ctx.phase, "attempt": self._ctx.retries},
        }
