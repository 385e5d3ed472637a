"""The ``svgx`` command: ``svgx envs``, ``svgx diagnose``.

Bad input ends with one line naming the field, the value and what is allowed,
and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import tyro


@dataclasses.dataclass(frozen=True)
class EnvsArgs:
    """List the registered tasks."""

    json: bool = False
    """Print JSON (name, state_size, action_size, horizon of each task) instead of a table."""


def envs_command(args: EnvsArgs) -> None:
    import envs

    rows = []
    for name in envs.names():
        env = envs.make(name)
        rows.append(
            dict(name=name, state_size=env.state_size, action_size=env.action_size,
                 noise_size=env.noise_size, horizon=env.horizon, dt=env.dt)
        )  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':16s} {'state':>6s} {'action':>7s} {'noise':>6s} {'horizon':>8s} {'dt':>7s}")
    for r in rows:
        print(
            f"{r['name']:16s} {r['state_size']:6d} {r['action_size']:7d} {r['noise_size']:6d} "
            f"{r['horizon']:8d} {r['dt']:7.4f}"
        )


def diagnose_command(args) -> None:
    from svgx import diagnostics

    fields = {f.name for f in dataclasses.fields(diagnostics.DiagnoseConfig)}
    try:
        config = diagnostics.DiagnoseConfig(**{k: v for k, v in vars(args).items() if k in fields})
        diagnostics.make_env(config)
    except ValueError as error:
        _fail(error)
    result = diagnostics.diagnose(config)
    print(result.to_json(config) if args.json else result.table(config))


def _diagnose_args():
    from svgx import diagnostics

    @dataclasses.dataclass(frozen=True)
    class DiagnoseArgs(diagnostics.DiagnoseConfig):
        """Compare a policy-gradient estimator with the true gradient (cosine, bias, variance)."""

        json: bool = False
        """Print JSON (with the fields cosine, relative_bias, variance, ...) instead of a table."""

    return DiagnoseArgs


def main(argv: list[str] | None = None) -> None:
    import svgx

    svgx.enable_compilation_cache()
    commands = {"envs": EnvsArgs, "diagnose": _diagnose_args()}
    try:
        args = tyro.extras.subcommand_cli_from_dict(commands, prog="svgx", args=argv)
    except ValueError as error:  # raised by a config's checks while tyro builds it
        _fail(error)
    if isinstance(args, EnvsArgs):
        envs_command(args)
    else:
        diagnose_command(args)


def _fail(error: Exception):
    print(f"svgx: error: {error}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
