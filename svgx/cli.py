"""The ``svgx`` command: ``envs``, ``train``, ``resume``, ``sweep``, ``plot``, ``baseline``,
``report``, ``diagnose``, ``ablate``, ``render``.

Every field of :class:`~svgx.config.Config` and :class:`~svgx.config.Hyperparams`
is a flag of ``svgx train`` (``--policy-lr 1e-3 --n-envs 8 …``), and so is every
option of every registered algorithm (``--algo svgk_er --k 5``): the flags are
generated from those classes and from :mod:`svgx.algorithms` when the command
runs, so an algorithm registered before :func:`main` is a choice of ``--algo``.
Bad input ends with one line naming the field, the value and what is allowed,
and exit status 2; nothing already written is changed. A run that goes non-finite
(:mod:`svgx.divergence`) ends with one line naming the seed, chunk, step and
quantity, and exit status 3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pathlib
import sys
import typing
from collections.abc import Callable
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
                "svgx: error: SVGX_COORDINATOR is set: "
                "SVGX_NUM_PROCESSES and SVGX_PROCESS_ID must be integers",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        jax.distributed.initialize(coordinator, num_processes=n, process_id=rank)
    else:
        jax.distributed.initialize()


def initialize_cpu_devices() -> None:
    """``SVGX_CPU_DEVICES=n`` (or ``auto``): the host as ``n`` CPU devices, over which the
    seeds are split (:mod:`svgx.devices`). A bad value ends the command; where this
    module is imported after JAX's backend has started (a notebook), the setting cannot
    apply and is ignored with a warning."""
    import warnings

    from svgx import devices

    try:
        devices.from_environment()
    except ValueError as error:
        print(f"svgx: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as error:
        warnings.warn(f"{devices.ENV_VAR} ignored: {error}", stacklevel=2)


# Before anything starts JAX's backend (importing the tasks does).
initialize_cpu_devices()
initialize_distributed()

from svgx import algorithms, tuned  # noqa: E402
from svgx.baselines import BaselineArgs  # noqa: E402 (a subcommand's arguments)
from svgx.config import Config, Hyperparams, config_for_steps  # noqa: E402
from svgx.divergence import EXIT_STATUS as NONFINITE_EXIT_STATUS  # noqa: E402
from svgx.divergence import NonFiniteError, NonFiniteLimits  # noqa: E402
from svgx.render import FORMATS, HEIGHT, VIDEO, WIDTH, GLError  # noqa: E402

# --- arguments -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnvsArgs:
    """List the registered tasks."""

    json: bool = False
    """Print JSON (name, state_size, action_size, horizon of each task) instead of a table."""
    playground: bool = True
    """List MuJoCo Playground's tasks too (``playground:NAME``; building each takes 1-4 s)."""


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train seeds of one algorithm on one task into a run directory.

    The flags of Config, Hyperparams and the algorithms' options are added by
    :func:`train_args`.
    """

    out: str
    """run directory (config.json, metrics.jsonl, checkpoint.eqx, curve.png)."""
    seeds: int = 1
    """seeds, vmapped in one program (and sharded over devices)."""
    seed: int = 0
    """the first PRNG key (the seeds' keys are split from it)."""
    limits: Annotated[NonFiniteLimits, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=NonFiniteLimits
    )
    steps: int | None = None
    """environment steps per seed (sets --iterations, rounded up to a multiple of --chunks)."""
    overwrite: bool = False
    """replace a run already in --out (default: refuse)."""
    video: Annotated[
        bool,
        tyro.conf.arg(
            help=f"at the end, render one episode of seed 0's mean policy to --out/{VIDEO} "
            "(as svgx render does)."
        ),
    ] = False


@dataclasses.dataclass(frozen=True)
class ResumeArgs:
    """Continue a run (or a sweep) from its last checkpoint."""

    dir: tyro.conf.Positional[str]
    """the run directory (or sweep directory)."""


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """Run a grid of configurations (TOML file; see README); re-running it resumes.
    Runs that another process is running are skipped: start it in several processes to
    share the sweep out."""

    file: tyro.conf.Positional[str]
    """the sweep file."""
    out: str | None = None
    """sweep directory (default: the file's name without .toml, next to it)."""
    only: tuple[str, ...] = ()
    """run only the runs whose names match one of these patterns, e.g. 'g0[0-6]-*' (all)."""


@dataclasses.dataclass(frozen=True)
class AblateArgs:
    """Fill a grid of gradient diagnoses (TOML file; see README, "Model-error ablations")
    into a Markdown table and heat maps; re-running it skips finished cells."""

    file: tyro.conf.Positional[str]
    """the grid file."""
    out: str | None = None
    """output directory (default: the file's name without .toml, next to it)."""
    report_only: bool = False
    """run no cell: write the table and heat maps of the cells finished so far."""


@dataclasses.dataclass(frozen=True)
class RenderArgs:
    """Render episodes of a run's mean policy (the deterministic action, as evaluation
    takes it) with MuJoCo's renderer to an MP4 or a GIF."""

    dir: tyro.conf.Positional[str]
    """the run directory (or one group of a sweep)."""
    seed: int = 0
    """which member of the run: a seed index (in a sweep group, a member of members.json)."""
    episodes: int = 1
    """episodes, one after another, from the member's evaluation key."""
    out: Annotated[
        str | None,
        tyro.conf.arg(
            help=f"the video: {' or '.join(FORMATS)}, chosen by the suffix (default: DIR/{VIDEO})."
        ),
    ] = None
    width: int = WIDTH
    """frame width in pixels (even)."""
    height: int = HEIGHT
    """frame height in pixels (even)."""


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Learning curves of run directories (mean and 95% band over seeds) into one PNG."""

    dirs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (or sweep directories)."""
    out: str = "curves.png"
    """the PNG to write."""
    metrics: Annotated[str, tyro.conf.arg(aliases=("--metric",))] = "eval_return"
    """comma-separated metrics, one panel each (columns of metrics.jsonl; README, "Metrics")."""


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    """The learning table of run directories: success (95% interval), steps to 50% success
    and their ratio to a reference method, throughput, wall and compile time (Markdown)."""

    dirs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (or sweep directories)."""
    out: str | None = None
    """also write the table to this Markdown file."""
    reference: str = "sac"
    """the method whose steps to 50% success the ratios divide by (its best row per task)."""


# --- commands --------------------------------------------------------------------------


def envs_command(args: EnvsArgs) -> None:
    import envs
    from envs import playground

    names = envs.names(playground_tasks=args.playground and playground.available())
    rows = []
    for name in names:
        env = envs.make(name)
        rows.append(
            dict(
                name=name,
                state_size=env.state_size,
                action_size=env.action_size,
                noise_size=env.noise_size,
                horizon=env.horizon,
                dt=env.dt,
            )
        )
    missing = args.playground and not playground.available()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':28s} {'state':>6s} {'action':>7s} {'noise':>6s} {'horizon':>8s} {'dt':>7s}")
    for r in rows:
        print(
            f"{r['name']:28s} {r['state_size']:6d} {r['action_size']:7d} {r['noise_size']:6d} "
            f"{r['horizon']:8d} {r['dt']:7.4f}"
        )
    if missing:
        print(
            f"\nMuJoCo Playground's tasks ({', '.join(playground.TASKS)}) need {playground.INSTALL}"
        )


# Flags generated from these classes' fields (Config.algo_options: from the algorithms' options).
CONFIG_FLAGS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "algo_options")
HYPERPARAM_FLAGS = tuple(f.name for f in dataclasses.fields(Hyperparams))


def _help(cls) -> dict[str, str]:
    """Field name -> the text of the ``Attributes:`` sections of ``cls``'s docstring and
    its base classes' (a subclass's entry wins; an entry ``a, b: text`` documents both)."""
    import docstring_parser

    texts = {}
    for klass in reversed(cls.__mro__):
        if "__doc__" not in vars(klass) or not klass.__doc__:
            continue
        for param in docstring_parser.parse(klass.__doc__).params:
            for name in param.arg_name.split(","):
                texts[name.strip()] = " ".join((param.description or "").split())
    return texts


def _option_flags() -> dict[str, tuple[type, dict[str, object], str]]:
    """Every registered algorithm's options: ``name -> (type, {algo: default}, help)``."""
    flags: dict[str, tuple[type, dict[str, object], str]] = {}
    static = (f.name for cls in (TrainArgs, NonFiniteLimits) for f in dataclasses.fields(cls))
    taken = {*CONFIG_FLAGS, *HYPERPARAM_FLAGS, *static}
    for algo in algorithms.names():
        cls = algorithms.get(algo)
        hints, texts = typing.get_type_hints(cls), _help(cls)
        for name, field in algorithms.options(algo).items():
            if name in taken:
                raise ValueError(
                    f"algorithm {algo!r}: option {name} is already a flag of svgx train"
                )
            kind, defaults, text = flags.get(name, (hints[name], {}, texts.get(name, "")))
            if kind is not hints[name]:
                raise ValueError(
                    f"algorithm {algo!r}: option {name} is {hints[name].__name__}, "
                    f"but {kind.__name__} in {', '.join(defaults)}"
                )
            flags[name] = (kind, {**defaults, algo: field.default}, text)
    return flags


def train_args() -> type[TrainArgs]:
    """:class:`TrainArgs` with a flag for every field of Config (``--algo``: one of the
    registered algorithms) and of Hyperparams, and for every registered algorithm's
    options (left unset: the algorithm's default)."""
    types = typing.get_type_hints(Config)
    types["algo"] = Literal[algorithms.names()]
    types |= {f.name: float for f in dataclasses.fields(Hyperparams)}
    texts = {**_help(Config), **_help(Hyperparams)}
    fields = []
    for f in (*dataclasses.fields(Config), *dataclasses.fields(Hyperparams)):
        if f.name == "algo_options":
            continue
        if f.name in tuned.tunable_fields():  # unset: the tuned value, else the default
            text = f"{texts.get(f.name)} (default: {f.default!r}, or the task's tuned value)"
            annotated = Annotated[types[f.name] | None, tyro.conf.arg(help=text)]
            fields.append((f.name, annotated, None))
            continue
        default = dataclasses.field(default=f.default, default_factory=f.default_factory)
        fields.append(
            (f.name, Annotated[types[f.name], tyro.conf.arg(help=texts.get(f.name))], default)
        )
    for name, (kind, defaults, text) in _option_flags().items():
        owners = "; ".join(f"{algo}: default {default!r}" for algo, default in defaults.items())
        annotated = Annotated[kind | None, tyro.conf.arg(help=f"{text} ({owners})")]
        fields.append((name, annotated, None))
    description = TrainArgs.__doc__.split("\n")[0]
    return dataclasses.make_dataclass(
        "TrainArgs", fields, bases=(TrainArgs,), frozen=True, namespace={"__doc__": description}
    )


def train_spec(args: TrainArgs):
    """The run ``args`` describe, checked (including what needs the task) before anything is
    written."""
    from svgx import rundir

    given = {
        name: getattr(args, name) for name in _option_flags() if getattr(args, name) is not None
    }
    own = algorithms.options(args.algo)
    for name, value in given.items():
        owners = [algo for algo in algorithms.names() if name in algorithms.options(algo)]
        for owner in owners:  # a bad value is reported as such, whichever the algorithm
            algorithms.make(owner, {name: value})
        if name not in own:
            raise ValueError(
                f"--{name.replace('_', '-')}: an option of {', '.join(owners)}, "
                f"not of algo={args.algo!r} (its options: {', '.join(own) or 'none'})"
            )
    unset = [name for name in tuned.tunable_fields() if getattr(args, name) is None]
    resolved = {
        name: value for name, value in tuned.settings(args.env, args.algo).items() if name in unset
    }
    defaults = {
        f.name: f.default for f in (*dataclasses.fields(Config), *dataclasses.fields(Hyperparams))
    }

    def value(name):
        """The flag if given, else the tuned value, else the class default."""
        flag = getattr(args, name)
        return flag if flag is not None else resolved.get(name, defaults[name])

    fields = {name: value(name) for name in CONFIG_FLAGS}
    if args.steps is not None:
        del fields["iterations"]  # --steps sets it
    tuned_options = {name: v for name, v in resolved.items() if name in own}
    config = config_for_steps(dict(fields, algo_options=tuned_options | given), args.steps)
    config.make_env()
    if not isinstance(args.seeds, int) or args.seeds < 1:
        raise ValueError(f"seeds={args.seeds!r}: must be an integer >= 1")
    hparams = Hyperparams(**{name: value(name) for name in HYPERPARAM_FLAGS}).check()
    if resolved:
        print(
            f"tuned settings for {args.algo} on {args.env}: "
            + ", ".join(f"{name}={v}" for name, v in resolved.items())
            + " (flags override them)",
            file=sys.stderr,
        )
    return rundir.RunSpec(config, hparams, args.seeds, args.seed, args.limits)


def train_command(args: TrainArgs) -> None:
    import jax

    from svgx import render, runner

    spec = train_spec(args)
    if args.video:  # before training, not after
        try:
            render.check_gl(spec.config.make_env())
        except ValueError as error:
            raise ValueError(f"--video: {error}") from None
    runner.run_in_dir(args.out, spec, overwrite=args.overwrite)
    print(pathlib.Path(args.out) / "curve.png")
    if args.video and jax.process_index() == 0:
        print(_describe(render.render_run(args.out, seed=0, episodes=1)))


def render_command(args: RenderArgs) -> None:
    from svgx import render

    video = render.render_run(
        args.dir,
        seed=args.seed,
        episodes=args.episodes,
        out=args.out,
        width=args.width,
        height=args.height,
    )
    print(_describe(video))


def _describe(video) -> str:
    returns = ", ".join(f"{r:+.3f}" for r in video.returns)
    return (
        f"{video.path} ({video.frames} frames; return {returns}; "
        f"success {int(video.success.sum())}/{len(video.success)})"
    )


def resume_command(args: ResumeArgs) -> None:
    from svgx import runner, sweep

    if sweep.is_sweep_dir(args.dir):
        sweep.run_sweep(None, args.dir)
        return
    runner.run_in_dir(args.dir)


def sweep_command(args: SweepArgs) -> None:
    from svgx import sweep

    sweep.run_sweep(args.file, args.out, only=args.only)


def plot_command(args: PlotArgs) -> None:
    from svgx import plot, sweep

    dirs = []
    for d in args.dirs:
        dirs.extend(sweep.group_dirs(d) if sweep.is_sweep_dir(d) else [d])
    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()]
    print(plot.plot_runs(dirs, args.out, metrics=metrics))


def report_command(args: ReportArgs) -> None:
    from svgx import report
    from svgx.io import atomic_write_text

    text = report.markdown(report.rows(args.dirs, args.reference), args.reference)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)


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


def ablate_command(args: AblateArgs) -> None:
    from svgx import ablate

    records = ablate.run_grid(args.file, args.out, report_only=args.report_only)
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.file).with_suffix("")
    print(f"{out / ablate.TABLE} ({len(records)} cells)")


def _diagnose_args():
    from svgx import diagnostics

    json_help = (
        "Print JSON (with the fields cosine, relative_bias, variance, ...) instead of a table."
    )
    return dataclasses.make_dataclass(
        "DiagnoseArgs",
        [
            (
                "estimator",
                Literal[tuple(diagnostics.ESTIMATORS)],
                diagnostics.DiagnoseConfig.estimator,
            ),
            ("json", Annotated[bool, tyro.conf.arg(help=json_help)], False),
        ],
        bases=(diagnostics.DiagnoseConfig,),
        frozen=True,
        namespace={
            "__doc__": "Compare a policy-gradient estimator with the true gradient "
            "(cosine, bias, variance)."
        },
    )


def commands() -> dict[str, tuple[type, Callable]]:
    """Each subcommand's arguments and function (``train``'s and ``diagnose``'s
    arguments are generated now, from the registered algorithms and estimators)."""
    return {
        "envs": (EnvsArgs, envs_command),
        "train": (train_args(), train_command),
        "resume": (ResumeArgs, resume_command),
        "sweep": (SweepArgs, sweep_command),
        "plot": (PlotArgs, plot_command),
        "baseline": (BaselineArgs, baseline_command),
        "report": (ReportArgs, report_command),
        "diagnose": (_diagnose_args(), diagnose_command),
        "ablate": (AblateArgs, ablate_command),
        "render": (RenderArgs, render_command),
    }


def main(argv: list[str] | None = None) -> None:
    import faulthandler

    import svgx
    from svgx import rundir

    # A crash inside native code (twice in long runs here: a segmentation fault in
    # libgcc_s, no Python error) then leaves every thread's Python stack on stderr.
    with contextlib.suppress(ValueError):  # io.UnsupportedOperation: stderr is not a file
        faulthandler.enable()
    svgx.enable_compilation_cache()
    try:
        table = commands()
        args = _parse({name: cls for name, (cls, _) in table.items()}, argv)
        next(command for cls, command in table.values() if type(args) is cls)(args)
    except (ValueError, rundir.RunDirError, FileNotFoundError) as error:
        _fail(error)
    except NonFiniteError as error:
        _fail(error, status=NONFINITE_EXIT_STATUS)
    except GLError as error:
        _fail(error, status=1)


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


def _fail(error: Exception | str, status: int = 2):
    """One line on stderr, then exit: status 2 for bad input, 3 for a run that went
    non-finite, 1 when no OpenGL context can be opened to render."""
    print(f"svgx: error: {error}", file=sys.stderr)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
