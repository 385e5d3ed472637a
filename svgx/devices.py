"""Several CPU devices for one run, so that its seeds use several cores.

XLA:CPU runs a program's many small operations one after another on one thread, so a
run on JAX's one CPU device uses one core however many seeds it vmaps. JAX can show
the host as ``n`` CPU devices instead (``jax_num_cpu_devices``), and the runner lays
the seed axis out over as many devices as split the seeds evenly
(:func:`svgx.runner.seed_mesh`); each device's share then runs on a thread of its own.
The results are the same (the sharded run's metrics equal the unsharded one's:
tests/test_cli.py). ``python -m experiments.bench_cpu_devices`` measures the gain
([results](../experiments/results/bench_cpu_devices.md)): use as many devices as
cores, and a seed count that they divide; more devices than cores run slower than
as many.

It must be chosen before JAX starts its backend (before the first array or device
query), so once per process: ``SVGX_CPU_DEVICES=n`` (or ``auto``: one per core) for
the ``svgx`` command, :func:`use_cpu_devices` first thing in a script.
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "SVGX_CPU_DEVICES"


def use_cpu_devices(n: int | str) -> int:
    """Shows the host to JAX as ``n`` CPU devices (``"auto"``: ``os.cpu_count()``) and
    returns ``n``. Raises ValueError for anything but a positive integer or ``"auto"``,
    and RuntimeError once JAX's backend has started."""
    if n == "auto":
        n = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu devices {n!r}: must be a positive integer or 'auto'")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as error:
        raise RuntimeError(
            f"cpu devices {n}: JAX's backend has already started in this process, so its "
            "CPU devices are fixed; choose them before anything runs on a device "
            f"({ENV_VAR} for the svgx command, use_cpu_devices first thing in a script)"
        ) from error
    return n


def from_environment() -> int | None:
    """:func:`use_cpu_devices` with ``$SVGX_CPU_DEVICES`` if it is set (else None)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if value != "auto":
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{ENV_VAR}={value!r}: must be a positive integer or 'auto'") from None
        if value < 1:
            raise ValueError(f"{ENV_VAR}={value!r}: must be a positive integer or 'auto'")
    return use_cpu_devices(value)
