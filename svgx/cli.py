"""The ``svgx`` command: ``envs``, ``train``, ``resume``, ``sweep``, ``plot``, ``baseline``, ``diagnose``.

Every option of :class:`~svgx.config.Config` and :class:`~svgx.config.Hyperparams`
is a flag of ``svgx train`` (``--policy-lr 1e-3 --n-envs 8 …``). Bad input ends
with one line naming the field, the value and what is allowed, and exit status 2;
nothing already written is changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pathlib
import re
import sys
from typing import Annotated, Literal

import tyro


def initialize_distributed() -> None:
    """Multi-host runs: with ``SVGX_COORDINATOR=host:port``, ``SVGX_NUM_PROCESSES`` and
    ``SVGX_PROCESS_ID`` set, every process joins ``jax.distributed`` (on CPU with Gloo
    collectives); with ``SVGX_DISTRIBUTED=1`` JAX finds the cluster itself (SLURM, TPU
    pods). Then every process runs the same command and process 0 writes the files."""
    import os

    import jax  # jax itself does not start a backend; envs (imported below) does

    coordinator = os.environ.get("SVGX_COORDINATOR")
    if not coordinator and os.environ.get("SVGX_DISTRIBUTED") != "1":
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        try:
            n, rank = int(os.environ["SVGX_NUM_PROCESSES"]), int(os.environ["SVGX_PROCESS_ID"])
        except (KeyError, ValueError):
            print(
                "svgx: error: SVGX_COORDINATOR is set: SVGX_NUM_PROCESSES and SVGX_PROCESS_ID must be integers",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        jax.distributed.initialize(coordinator, num_processes=n, process_id=rank)
    else:
        jax.distributed.initialize()


# Before anything starts JAX's backend (importing the tasks does).
initialize_distributed()

from svgx.config import Config, iterations_for_steps  # noqa: E402, F401 (re-exported)

# --- arguments -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnvsArgs:
    """List the registered tasks."""

    json: bool = False
    """Print JSON (name, state_size, action_size, horizon of each task) instead of a table."""


@dataclasses.dataclass(frozen=True)
class HyperparamArgs:
    """What can be swept (see svgx.config.Hyperparams)."""

    policy_lr: float = 3e-4
    """Adam step size of the policy."""
    critic_lr: float = 1e-3
    """Adam step size of V or Q."""
    model_lr: float = 1e-3
    """Adam step size of the learned dynamics model."""
    gamma: float = 0.99
    """discount, in (0, 1]."""
    tau: float = 0.005
    """Polyak rate of the critics' targets."""
    truncation: float = 5.0
    """importance-weight cap for replayed data (>= 1)."""
    init_std: float = 0.5
    """the policy's initial σ (pre-squash)."""
    exploration_std: float = 0.3
    """DPG's Gaussian exploration noise (pre-squash)."""
    max_grad_norm: float = 10.0
    """global-norm gradient clipping of every update."""
    reward_scale: float = 1.0
    """multiplies the reward in every learning signal (not in reported returns)."""

    def hyperparams(self):
        from svgx.config import Hyperparams

        return Hyperparams(**dataclasses.asdict(self)).check()


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train seeds of one algorithm on one task into a run directory."""

    out: str
    """run directory (config.json, metrics.jsonl, checkpoint.eqx, curve.png)."""
    config: Annotated[Config, tyro.conf.arg(name="")] = dataclasses.field(default_factory=Config)
    hparams: Annotated[HyperparamArgs, tyro.conf.arg(name="")] = HyperparamArgs()
    seeds: int = 1
    """seeds, vmapped in one program (and sharded over devices)."""
    seed: int = 0
    """the first PRNG key (the seeds' keys are split from it)."""
    steps: int | None = None
    """environment steps per seed (sets --iterations, rounded up to a multiple of --chunks)."""
    overwrite: bool = False
    """replace a run already in --out (default: refuse)."""


@dataclasses.dataclass(frozen=True)
class ResumeArgs:
    """Continue a run (or a sweep) from its last checkpoint."""

    dir: tyro.conf.Positional[str]
    """the run directory (or sweep directory)."""


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """Run a grid of configurations (TOML file; see README); re-running it resumes."""

    file: tyro.conf.Positional[str]
    """the sweep file."""
    out: str | None = None
    """sweep directory (default: the file's name without .toml, next to it)."""


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Learning curves of run directories (mean and 95% band over seeds) into one PNG."""

    dirs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (or sweep directories)."""
    out: str = "curves.png"
    """the PNG to write."""
    metric: str = "eval_return"
    """the metric on the y axis (any column of metrics.jsonl)."""


@dataclasses.dataclass(frozen=True)
class BaselineArgs:
    """Train one of Brax's own agents on an svgx task (through the Brax adapter)."""

    env: str
    """task name (svgx envs)."""
    algo: Literal["ppo", "sac", "apg"]
    """Brax's trainer."""
    out: str
    """run directory (same metrics format as svgx train)."""
    steps: int = 100_000
    """environment steps per seed."""
    seeds: int = 1
    """seeds (run one after another)."""
    seed: int = 0
    """the first seed."""
    n_envs: int = 16
    """parallel environments."""
    evaluations: int = 10
    """evaluations (learning-curve points)."""
    hidden: tuple[int, ...] = (100, 100)
    """hidden widths of Brax's policy and value networks."""
    env_options: dict[str, int | float | bool | str] = dataclasses.field(default_factory=dict)
    """overrides of the task's configuration, as for svgx train (e.g. --env-options horizon 20)."""
    batch_size: int = 64
    """SAC's mini-batch size."""
    updates_per_step: int = 1
    """SAC's gradient updates per (batched) environment step."""
    learning_rate: float = 3e-4
    """learning rate of every network."""
    discounting: float = 0.99
    """discount factor γ (PPO and SAC)."""
    overwrite: bool = False
    """replace a run already in --out."""


# --- commands --------------------------------------------------------------------------


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


def train_spec(args: TrainArgs):
    from svgx import rundir

    config = args.config
    if args.steps is not None:
        config = dataclasses.replace(config, iterations=iterations_for_steps(config, args.steps))
    if not isinstance(args.seeds, int) or args.seeds < 1:
        raise ValueError(f"seeds={args.seeds!r}: must be an integer >= 1")
    return rundir.RunSpec(config, args.hparams.hyperparams(), args.seeds, args.seed)


def train_command(args: TrainArgs) -> None:
    from svgx import runner

    spec = train_spec(args)
    runner.run_in_dir(args.out, spec, overwrite=args.overwrite)
    print(pathlib.Path(args.out) / "curve.png")


def resume_command(args: ResumeArgs) -> None:
    from svgx import runner, sweep

    if sweep.is_sweep_dir(args.dir):
        sweep.run_sweep(None, args.dir)
        return
    runner.run_in_dir(args.dir)


def sweep_command(args: SweepArgs) -> None:
    from svgx import sweep

    sweep.run_sweep(args.file, args.out)


def plot_command(args: PlotArgs) -> None:
    from svgx import plot, sweep

    dirs = []
    for d in args.dirs:
        dirs.extend(sweep.group_dirs(d) if sweep.is_sweep_dir(d) else [d])
    print(plot.plot_runs(dirs, args.out, metric=args.metric))


def baseline_command(args: BaselineArgs) -> None:
    from svgx import baselines

    baselines.run_baseline(args)


def diagnose_command(args) -> None:
    from svgx import diagnostics

    fields = {f.name for f in dataclasses.fields(diagnostics.DiagnoseConfig)}
    config = diagnostics.DiagnoseConfig(**{k: v for k, v in vars(args).items() if k in fields})
    diagnostics.make_env(config)
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


COMMANDS = {
    "envs": (EnvsArgs, envs_command),
    "train": (TrainArgs, train_command),
    "resume": (ResumeArgs, resume_command),
    "sweep": (SweepArgs, sweep_command),
    "plot": (PlotArgs, plot_command),
    "baseline": (BaselineArgs, baseline_command),
}


def main(argv: list[str] | None = None) -> None:
    import svgx
    from svgx import rundir

    svgx.enable_compilation_cache()
    commands = {name: cls for name, (cls, _) in COMMANDS.items()} | {"diagnose": _diagnose_args()}
    try:
        args = _parse(commands, argv)
        for cls, command in COMMANDS.values():
            if type(args) is cls:
                command(args)
                return
        diagnose_command(args)
    except (ValueError, rundir.RunDirError, FileNotFoundError) as error:
        _fail(error)


def _parse(commands, argv):
    """tyro's parse, with its boxed error condensed to one line (exit status 2)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.extras.subcommand_cli_from_dict(commands, prog="svgx", args=argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            sys.stderr.write(captured.getvalue())
            raise
        _fail(_condense(captured.getvalue()))


def _condense(message: str) -> str:
    """tyro's error box as one line: its message, the argument's expected form, and
    the available subcommands when it names them."""
    paragraphs, current = [], []
    for line in message.splitlines():
        line = line.strip()
        if not line or line[0] in "╭╰":
            continue
        line = line.strip("│").strip()
        if line and set(line) <= set("─ "):
            paragraphs.append(current)
            current = []
        elif line:
            current.append(line)
    paragraphs.append(current)
    helptext = [p[0] for p in paragraphs if p and p[0].startswith("For full helptext")]
    paragraphs = [p for p in paragraphs if p and not p[0].startswith("For full helptext")]
    if not paragraphs:
        return "invalid arguments (see svgx --help)"
    text = " ".join(paragraphs[0])
    for p in paragraphs[1:]:
        if p[0].startswith("Argument helptext:") and len(p) > 1:
            text += f" (expected: {p[1]})"
        elif p[0].startswith("Available subcommands"):
            text += f"; {' '.join(p)}"
    if text.startswith("Unrecognized options") and "Available" not in text and helptext:
        text += f" (valid options: {helptext[0].removeprefix('For full helptext, ')})"
    return text


def _fail(error: Exception | str):
    print(f"svgx: error: {error}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
