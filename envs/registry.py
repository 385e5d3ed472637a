"""The task registry: ``envs.make(name, **overrides)`` and ``envs.names()``."""

import dataclasses

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


def names() -> list[str]:
    """The registered task names."""
    return list(_TASKS)


def config_fields(name: str) -> list[str]:
    """The overridable configuration fields of task ``name``."""
    _check_name(name)
    return [f.name for f in dataclasses.fields(_TASKS[name][1])]


def _check_name(name: str) -> None:
    if name not in _TASKS:
        raise ValueError(f"unknown env {name!r}; valid names: {', '.join(_TASKS)}")


def make(name: str, **overrides) -> Env:
    """Builds task ``name``; ``overrides`` replace fields of its config.

    Raises:
      ValueError: for an unknown name or override field (the message lists the valid
        ones), or an override value the config rejects.
    """
    _check_name(name)
    env_class, config_class = _TASKS[name]
    valid = config_fields(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown override(s) {', '.join(unknown)} for env {name!r}; "
            f"valid fields: {', '.join(valid)}"
        )
    return env_class(config_class(**overrides))
