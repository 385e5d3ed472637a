"""Algorithms by name: the registry behind ``Config(algo=…)`` and ``svgx train --algo``.

``register(name, cls)`` makes a subclass of :class:`Algorithm` available under
``name`` (built-in ones are registered below, in this order); ``get(name)`` is its
class, ``names()`` lists them, and ``make(name, options)`` builds one with its
options checked. An algorithm registered from outside the package before the
CLI runs is a choice of ``svgx train --algo`` like any other (README, "Adding
an estimator").
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping

from svgx.algorithms.base import (
    Algorithm,
    PolicyInputs,
    check_float,
    check_int,
    importance_weight_metrics,
)
from svgx.algorithms.dpg import DPG
from svgx.algorithms.likelihood_ratio import ActorCritic, Reinforce
from svgx.algorithms.planner import Planner
from svgx.algorithms.svg import SVG1, SVG0Replay, SVG1Replay, SVGInf, SVGKReplay, ValueExpansion

__all__ = [
    "Algorithm",
    "PolicyInputs",
    "ValueExpansion",
    "check_float",
    "check_int",
    "get",
    "importance_weight_metrics",
    "make",
    "names",
    "options",
    "register",
]

OPTION_TYPES = (int, float, bool, str)
_REGISTRY: dict[str, type[Algorithm]] = {}


def register(name: str, cls: type[Algorithm]) -> type[Algorithm]:
    """Makes ``cls`` the algorithm ``name``; returns ``cls``.

    ``cls`` must be a concrete frozen-dataclass subclass of :class:`Algorithm` that
    declares ``data``, ``critic`` and ``uses_dynamics``, and whose options all have a
    default and one of the types int, float, bool, str. Registering the same class
    under the same name again does nothing; another class under a taken name is an error.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"algorithm name {name!r}: must be an identifier (letters, digits, _)")
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)) or inspect.isabstract(cls):
        raise ValueError(f"algorithm {name!r}: {cls!r} is not a concrete subclass of Algorithm")
    if not dataclasses.is_dataclass(cls) or "__dataclass_fields__" not in vars(cls):
        raise ValueError(
            f"algorithm {name!r}: {cls.__name__} must be a @dataclasses.dataclass(frozen=True)"
        )
    declared = {
        "data": ("episodes", "replay"),
        "critic": ("v", "q", None),
        "uses_dynamics": (True, False),
    }
    for attribute, allowed in declared.items():
        if getattr(cls, attribute, "missing") not in allowed:
            raise ValueError(
                f"algorithm {name!r}: "
                f"{cls.__name__}.{attribute}={getattr(cls, attribute, 'missing')!r}; "
                f"must be one of {allowed}"
            )
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if hints[field.name] not in OPTION_TYPES:
            raise ValueError(
                f"algorithm {name!r}: option {field.name} has type {hints[field.name]!r}; "
                "options are int, float, bool or str"
            )
        if field.default is dataclasses.MISSING:
            raise ValueError(f"algorithm {name!r}: option {field.name} needs a default")
    if _REGISTRY.get(name, cls) is not cls:
        raise ValueError(
            f"algorithm name {name!r}: already registered to {_REGISTRY[name].__name__}"
        )
    _REGISTRY[name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The registered algorithms, in the order they were registered."""
    return tuple(_REGISTRY)


def get(name: str) -> type[Algorithm]:
    """The class registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"algo={name!r}: unknown algorithm; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def options(name: str) -> dict[str, dataclasses.Field]:
    """The options of algorithm ``name`` (its dataclass fields), by name."""
    return {field.name: field for field in dataclasses.fields(get(name))}


def make(name: str, algo_options: Mapping[str, object] | None = None) -> Algorithm:
    """Algorithm ``name`` with ``algo_options`` (its own checks run; unknown options are an
    error)."""
    algo_options = dict(algo_options or {})
    allowed = options(name)
    unknown = sorted(set(algo_options) - set(allowed))
    if unknown:
        raise ValueError(
            f"algo_options: {name} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return get(name)(**algo_options)


for _name, _cls in (
    ("svg_inf", SVGInf),
    ("svg1", SVG1),
    ("svg1_er", SVG1Replay),
    ("svgk_er", SVGKReplay),
    ("svg0_er", SVG0Replay),
    ("planner", Planner),
    ("dpg", DPG),
    ("actor_critic", ActorCritic),
    ("reinforce", Reinforce),
):
    register(_name, _cls)
