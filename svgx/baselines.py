"""Brax's own PPO, SAC and APG on an svgx task, through the Brax adapter.

The run directory has svgx's layout (``config.json`` says ``"baseline"``,
``metrics.jsonl`` one line per evaluation and seed, ``curve.png``), so
``svgx plot`` draws baselines beside svgx runs. Evaluations use Brax's own
evaluator (deterministic actions, ``num_eval_envs`` episodes); ``eval_success``
is the fraction of evaluation episodes whose final state meets the task's
success measure (the adapter reports success at the last step of an episode).
Seeds run one after another (Brax's trainers are not vmappable over seeds), so
``wall_time`` counts from the start of each seed's run. Each finished seed's
evaluations are written to ``seeds/<seed>.json`` at once, so a run of the same
arguments in the same directory after an interruption (before ``metrics.jsonl``; a
sweep's resume) keeps them and runs only the seeds that had not finished.

Non-finite runs: the task's diverged steps end their episodes before Brax sees them
(:mod:`envs.brax_adapter`; ``eval_diverged`` counts the evaluation episodes that
diverged). A seed whose evaluation return is not finite has non-finite parameters
and can learn nothing more, so its training stops there; the other seeds still run,
the stopped seed's later evaluations are written as NaN, ``stopped.json`` names the
first such seed, and :class:`~svgx.divergence.NonFiniteError` says so at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import shutil
import sys
import time
from typing import Literal

import numpy as np

from svgx import rundir
from svgx.cache import release_compiled_programs
from svgx.divergence import Divergence, NonFiniteError
from svgx.io import atomic_write_text

ALGORITHMS = ("ppo", "sac", "apg")
EVAL_EPISODES = 16  # Brax's num_eval_envs: episodes per evaluation
SEEDS = "seeds"  # a baseline directory's finished seeds, one file each, for resuming


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
    reward_scaling: float = 1.0
    """factor on the rewards the learner sees (PPO, SAC); evaluations report the task's own."""
    apg_horizon: int = 32
    """APG's truncation length (horizon_length), at most the task's horizon."""
    overwrite: bool = False
    """replace a run already in --out."""


def trainer(
    algo: str,
    env,
    *,
    steps: int,
    n_envs: int,
    evaluations: int,
    hidden: tuple[int, ...],
    seed: int,
    progress_fn,
    updates_per_step: int = 1,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    discounting: float = 0.99,
    reward_scaling: float = 1.0,
    apg_horizon: int = 32,
):
    """Brax's ``train`` for ``algo`` with svgx's sizes; returns
    ``(make_policy, params, metrics)``."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo={algo!r}: unknown Brax baseline; valid: {', '.join(ALGORITHMS)}")
    from envs.brax_adapter import BraxEnv

    brax_env = BraxEnv(env)
    common = dict(
        environment=brax_env,
        episode_length=env.horizon,
        num_envs=n_envs,
        num_evals=evaluations,
        seed=seed,
        progress_fn=progress_fn,
        num_eval_envs=EVAL_EPISODES,
        deterministic_eval=True,
    )
    if algo == "ppo":
        from brax.training.agents.ppo import networks, train

        factory = functools.partial(
            networks.make_ppo_networks,
            policy_hidden_layer_sizes=hidden,
            value_hidden_layer_sizes=hidden,
        )
        return train.train(
            **common,
            num_timesteps=steps,
            network_factory=factory,
            learning_rate=learning_rate,
            discounting=discounting,
            reward_scaling=reward_scaling,
            unroll_length=10,
            batch_size=n_envs,
            num_minibatches=4,
            num_updates_per_batch=4,
            entropy_cost=1e-3,
        )
    if algo == "sac":
        from brax.training.agents.sac import networks, train

        factory = functools.partial(networks.make_sac_networks, hidden_layer_sizes=hidden)
        return train.train(
            **common,
            num_timesteps=steps,
            network_factory=factory,
            learning_rate=learning_rate,
            discounting=discounting,
            reward_scaling=reward_scaling,
            batch_size=batch_size,
            grad_updates_per_step=updates_per_step,
            min_replay_size=min(1000, steps // 10),
            max_replay_size=min(steps, 100_000),
        )
    from brax.training.agents.apg import networks, train

    factory = functools.partial(networks.make_apg_networks, hidden_layer_sizes=hidden)
    horizon, policy_updates, _ = apg_schedule(env, steps, n_envs, evaluations, apg_horizon)
    return train.train(
        **common,
        policy_updates=policy_updates,
        horizon_length=horizon,
        network_factory=factory,
        learning_rate=learning_rate,
    )


def apg_schedule(
    env, steps: int, n_envs: int, evaluations: int, apg_horizon: int = 32
) -> tuple[int, int, int]:
    """APG's ``(horizon_length, policy_updates, env steps per evaluation index)``: Brax's
    APG reports the evaluation index, not environment steps, to ``progress_fn``."""
    horizon = min(apg_horizon, env.horizon)
    policy_updates = max(evaluations, steps // (n_envs * horizon))
    updates_per_epoch = round(policy_updates / max(evaluations - 1, 1))
    return horizon, policy_updates, updates_per_epoch * n_envs * horizon


def check_args(args: BaselineArgs):
    """Raises ValueError naming the first bad field of ``args``; returns the task."""
    import envs

    if args.algo not in ALGORITHMS:
        raise ValueError(
            f"algo={args.algo!r}: unknown Brax baseline; valid: {', '.join(ALGORITHMS)}"
        )
    env = envs.make(args.env, **args.env_options)
    counts = (
        "steps",
        "seeds",
        "n_envs",
        "evaluations",
        "batch_size",
        "updates_per_step",
        "apg_horizon",
    )
    for name in counts:
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    if not isinstance(args.seed, int) or isinstance(args.seed, bool) or args.seed < 0:
        raise ValueError(f"seed={args.seed!r}: must be an integer >= 0")
    if not args.hidden or any(not isinstance(w, int) or w < 1 for w in args.hidden):
        raise ValueError(f"hidden={args.hidden!r}: must be positive integer widths")
    for name, upper in (
        ("discounting", 1.0),
        ("reward_scaling", math.inf),
        ("learning_rate", math.inf),
    ):
        value = getattr(args, name)
        closed = upper == 1.0
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 < value <= upper if closed else 0 < value < upper)
        ):
            allowed = "in (0, 1]" if closed else "a finite number > 0"
            raise ValueError(f"{name}={value!r}: must be {allowed}")
    return env


def run_baseline(args, progress=None) -> list[dict[str, np.ndarray]]:
    """Runs ``args`` (:class:`BaselineArgs`) into ``args.out``; returns the metrics
    history. Holds the directory while it runs (:func:`svgx.rundir.exclusive`)."""
    env = check_args(args)
    with rundir.exclusive(args.out):
        return _run_locked(args, env, progress)


def _run_locked(args, env, progress) -> list[dict[str, np.ndarray]]:
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    out = pathlib.Path(args.out)
    if (out / rundir.CONFIG).exists() and not args.overwrite:
        raise rundir.RunDirError(
            f"--out {str(out)!r}: already holds a run; use --overwrite or another directory"
        )
    finished = _finished_seeds(out, args)
    description = dict(format=rundir.FORMAT, baseline=dataclasses.asdict(args))
    atomic_write_text(out / rundir.CONFIG, json.dumps(description, indent=2))
    (out / rundir.STOPPED).unlink(missing_ok=True)  # from a run this one replaces
    if not finished:
        shutil.rmtree(out / SEEDS, ignore_errors=True)
    step_scale = (
        apg_schedule(env, args.steps, args.n_envs, args.evaluations, args.apg_horizon)[2]
        if args.algo == "apg"
        else 1
    )
    per_seed: list[list[dict]] = []
    stopped: list[Divergence] = []
    for index, seed in enumerate(range(args.seed, args.seed + args.seeds)):
        if seed in finished:
            points, divergence = finished[seed]
            progress(f"[{args.algo} (brax) {args.env}] seed {seed}: finished before, kept")
            per_seed.append(points)
            stopped.extend([divergence] if divergence else [])
            continue
        start = time.perf_counter()
        points: list[dict] = []

        def record(step, metrics, points=points, seed=seed, index=index, start=start):
            points.append(
                dict(
                    env_steps=int(step) * step_scale,
                    eval_return=float(metrics.get("eval/episode_reward", np.nan)),
                    eval_success=float(metrics.get("eval/episode_success", np.nan)),
                    # Brax's evaluator reports the mean over its episodes; svgx a count.
                    eval_diverged=EVAL_EPISODES
                    * float(metrics.get("eval/episode_diverged", np.nan)),
                    wall_time=time.perf_counter() - start,  # since this seed's start
                )
            )
            progress(
                f"[{args.algo} (brax) {args.env}] seed {seed}  "
                f"env steps {points[-1]['env_steps']:,}  "
                f"eval return {points[-1]['eval_return']:+.3f}  "
                f"success {points[-1]['eval_success']:.0%}"
            )
            if not math.isfinite(points[-1]["eval_return"]):
                raise _SeedStopped(
                    Divergence(
                        seed=index,
                        chunk=len(points) - 1,
                        chunks=args.evaluations - 1,
                        env_steps=points[-1]["env_steps"],
                        quantity=(
                            f"Brax {args.algo}'s evaluation return is "
                            f"{points[-1]['eval_return']} (its parameters are not finite); "
                            "this seed stopped there, the others ran to the end"
                        ),
                    )
                )

        try:
            trainer(
                args.algo,
                env,
                steps=args.steps,
                n_envs=args.n_envs,
                evaluations=args.evaluations,
                hidden=tuple(args.hidden),
                seed=seed,
                progress_fn=record,
                updates_per_step=args.updates_per_step,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                discounting=args.discounting,
                reward_scaling=args.reward_scaling,
                apg_horizon=args.apg_horizon,
            )
        except _SeedStopped as stop:
            progress(f"[{args.algo} (brax) {args.env}] stopped: {stop.divergence}")
            stopped.append(stop.divergence)
        divergence = stopped[-1] if stopped and stopped[-1].seed == index else None
        atomic_write_text(
            out / SEEDS / f"{seed}.json",
            json.dumps(dict(points=points, stopped=divergence and dataclasses.asdict(divergence))),
        )
        per_seed.append(points)
        release_compiled_programs()  # Brax compiles each seed's programs anew
    history = _history(per_seed)
    rundir.write_metrics(out, history)
    from svgx.plot import plot_runs

    plot_runs([out], out / rundir.CURVE)
    if stopped:
        rundir.write_stopped(out, stopped[0])
        raise NonFiniteError(stopped[0], None)
    return history


def _finished_seeds(out: pathlib.Path, args) -> dict[int, tuple[list[dict], Divergence | None]]:
    """The seeds a run of the same arguments finished in ``out`` before it was
    interrupted (it wrote no metrics): each seed's evaluations and, if it went
    non-finite, where. A finished run that is overwritten starts again."""
    if not (out / rundir.CONFIG).is_file() or (out / rundir.METRICS).is_file():
        return {}
    recorded = json.loads((out / rundir.CONFIG).read_text()).get("baseline", {})
    if not same_baseline(recorded, args):
        return {}
    finished = {}
    for seed in range(args.seed, args.seed + args.seeds):
        file = out / SEEDS / f"{seed}.json"
        if file.is_file():
            record = json.loads(file.read_text())
            stop = record["stopped"]
            finished[seed] = (record["points"], Divergence(**stop) if stop else None)
    return finished


class _SeedStopped(Exception):
    """Raised from Brax's progress callback to end a seed whose parameters are not finite."""

    def __init__(self, divergence: Divergence):
        super().__init__(str(divergence))
        self.divergence = divergence


def _history(per_seed: list[list[dict]]) -> list[dict[str, np.ndarray]]:
    """Per evaluation, each metric over the seeds; a seed that stopped early is NaN after
    its last evaluation (its environment steps are the longest seed's)."""
    longest = max(per_seed, key=len)
    history = []
    for i, point in enumerate(longest):
        rows = [p[i] if i < len(p) else None for p in per_seed]
        history.append(
            {
                name: np.array(
                    [
                        row[name]
                        if row is not None
                        else (point[name] if name == "env_steps" else np.nan)
                        for row in rows
                    ]
                )
                for name in point
            }
        )
    return history


def same_baseline(recorded: dict, args) -> bool:
    """Whether a baseline run directory's recorded arguments are ``args`` (a
    :class:`~svgx.baselines.BaselineArgs`), wherever it is. A field the record lacks
    (one added to svgx after the run) counts as its default, so an older run that
    used it is still the same configuration."""
    wanted = json.loads(json.dumps(dataclasses.asdict(args)))
    return _without_place(with_defaults(recorded)) == _without_place(wanted)


def with_defaults(recorded: dict) -> dict:
    """A baseline run directory's recorded arguments, each field of
    :class:`BaselineArgs` that the record lacks (one added to svgx after the run) at its
    default, as JSON has them."""
    defaults = {}
    for f in dataclasses.fields(BaselineArgs):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = json.loads(json.dumps(f.default))
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = json.loads(json.dumps(f.default_factory()))
    return {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}


def _without_place(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k not in ("out", "overwrite")}
