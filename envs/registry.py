"""The task registry: ``envs.make(name, **overrides)`` and ``envs.names()``.

Besides svgx's own tasks, ``playground:NAME`` names MuJoCo Playground's DM Control
Suite task ``NAME`` (:mod:`envs.playground`; the optional extra ``svgx[playground]``).
"""

import dataclasses

from envs import playground
from envs.base import Env, EnvConfig
from envs.tasks import cartpole, gripper, hand, locomotion, lqg, reacher, swimmer

# name -> (class, config class). The paper's tasks in the paper's order (§6), then
# the probes that are not the paper's (lqg: a linear-quadratic-Gaussian system with
# closed-form returns and gradients).
_TASKS: dict[str, tuple[type[Env], type[EnvConfig]]] = {
    "hand": (hand.Hand, hand.HandConfig),
    "cartpole": (cartpole.Cartpole, cartpole.CartpoleConfig),
    "swimmer3": (swimmer.Swimmer3, swimmer.SwimmerConfig),
    "swimmer5": (swimmer.Swimmer5, swimmer.SwimmerConfig),
    "swimmer7": (swimmer.Swimmer7, swimmer.SwimmerConfig),
    "reacher4": (reacher.Reacher4, reacher.ReacherConfig),
    "reacher_moving": (reacher.ReacherMoving, reacher.ReacherConfig),
    "gripper": (gripper.Gripper, gripper.GripperConfig),
    "monoped": (locomotion.Monoped, locomotion.MonopedConfig),
    "cheetah": (locomotion.Cheetah, locomotion.LocomotionConfig),
    "cheetah_springs": (locomotion.CheetahSprings, locomotion.LocomotionConfig),
    "walker": (locomotion.Walker, locomotion.WalkerConfig),
    "lqg": (lqg.Lqg, lqg.LqgConfig),
}


def names(playground_tasks: bool = True) -> list[str]:
    """The registered task names: svgx's own, then (unless ``playground_tasks`` is
    false) Playground's as ``playground:NAME``, listed whether or not Playground is
    installed (building one without it raises an error saying what to install)."""
    own = list(_TASKS)
    return own + [playground.PREFIX + n for n in playground.TASKS] if playground_tasks else own


def config_fields(name: str) -> list[str]:
    """The overridable configuration fields of task ``name``."""
    _check_name(name)
    return [f.name for f in dataclasses.fields(_entry(name)[1])]


def _check_name(name: str) -> None:
    if name not in names():
        raise ValueError(f"unknown env {name!r}; valid names: {', '.join(names())}")


def task_class(name: str) -> type[Env]:
    """The class of task ``name``, without building it."""
    _check_name(name)
    return _entry(name)[0]


def _entry(name: str) -> tuple[type[Env], type[EnvConfig]]:
    if name.startswith(playground.PREFIX):
        return playground.PlaygroundEnv, playground.PlaygroundConfig
    return _TASKS[name]


def make(name: str, **overrides) -> Env:
    """Builds task ``name``; ``overrides`` replace fields of its config.

    Raises:
      ValueError: for an unknown name or override field (the message lists the valid
        ones), or an override value the config rejects.
    """
    _check_name(name)
    env_class, config_class = _entry(name)
    valid = config_fields(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown override(s) {', '.join(unknown)} for env {name!r}; "
            f"valid fields: {', '.join(valid)}"
        )
    if env_class is playground.PlaygroundEnv:
        return env_class(name.removeprefix(playground.PREFIX), config_class(**overrides))
    return env_class(config_class(**overrides))
