"""How few transitions carry a batch's policy gradient, and what clipping each one does.

At a run's last checkpoint (member ``--member``: its policy, critic, replay database and
model), the gradient of the run's own policy loss (its algorithm and options; the
entropy bonus left out) on each of ``--samples`` transitions drawn from its replay,
with the simulator's Jacobians or the run's learned model's. Printed per source:

* the per-transition gradient norms' median, 99th percentile and maximum, and the
  share of ``Σ_i ‖g_i‖²`` that the top 1% of transitions hold;
* how well a batch of ``--batch`` transitions points along the mean of all of them:
  the median (and 10th percentile) over ``--batches`` batches of the cosine between
  the batch's mean gradient and the all-sample mean, plain (global-norm clipping
  scales a batch's gradient, it does not turn it) and with each transition's gradient
  clipped to ``k`` times the median norm (cosine against the all-sample plain mean,
  which clipping biases, and against the all-sample clipped mean, its own target).

Where the top 1% hold most of the sum (stiff contact states, ``experiments.jacobian_norms``),
a batch's direction is decided by whether it drew one of them.

    python -m experiments.gradient_tails runs/paper/fig4_svg1_er/g00-reacher4-svg1_er-learned \\
        --jacobians simulator learned --actions fresh
"""

from __future__ import annotations

import argparse
import dataclasses

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

import svgx
from svgx import rundir, runner
from svgx.algorithms import PolicyInputs
from svgx.dynamics import make_dynamics


def per_transition_gradients(
    directory: str,
    jacobians: str,
    samples: int,
    *,
    member: int = 0,
    actions: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``[samples, n_params]``: the run's policy-loss gradient (ascent direction) on each
    of ``samples`` transitions drawn uniformly from member ``member``'s replay.
    ``actions`` replaces the algorithm's option of that name (``"fresh"``: the current
    policy's actions, no importance weights; None: the run's own)."""
    spec = rundir.read_spec(directory)
    config = spec.config
    algorithm = config.algorithm
    if actions is not None:
        algorithm = dataclasses.replace(algorithm, actions=actions)
    if not algorithm.uses_dynamics:
        raise ValueError(f"algo={config.algo!r} uses no dynamics: no Jacobian source to compare")
    if algorithm.data != "replay":
        raise ValueError(f"algo={config.algo!r} learns from episodes, not from a replay database")
    if not 0 <= member < spec.seeds:
        raise ValueError(f"member={member}: the run has members 0..{spec.seeds - 1}")
    state = rundir.load_checkpoint(directory, runner.state_shape(spec))[0]
    state = jax.tree.map(lambda x: x[member] if eqx.is_array(x) else x, state)
    hp = jax.tree.map(
        lambda x: x[member] if jnp.ndim(x) else x, spec.hparams.as_arrays(jnp.float32)
    )
    env = config.make_env()
    if jacobians == "learned" and state.model is None:
        raise ValueError(f"{directory!r}: the run learned no model (jacobians='learned' needs one)")
    dynamics = make_dynamics(jacobians, env, state.model)
    inputs = PolicyInputs(
        critic=state.critic,
        dynamics=dynamics,
        reward=lambda s, a, t: hp.reward_scale * env.reward(s, a, t),
        episodes=None,
        buffer=state.buffer,
        batch_size=1,
        hp=hp,
        extra=state.extra,
    )

    # The estimator's own per-transition gradient, before a run's per-stretch clipping.
    estimator_loss = getattr(algorithm, "estimator_loss", algorithm.policy_loss)

    def one(key):
        loss, _ = estimator_loss(inputs, key=key)
        grads = eqx.filter_grad(lambda policy: loss(policy)[0])(state.policy)
        return -jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_array))[0]

    keys = jax.random.split(jax.random.key(seed), samples)
    return np.asarray(jax.jit(lambda k: jax.lax.map(one, k, batch_size=64))(keys))


MULTIPLES = (1.0, 3.0, 10.0)  # per-transition clipping bounds, in multiples of the median norm


def clip_rows(g: np.ndarray, bound: float) -> np.ndarray:
    """Each row scaled down to norm ``bound`` if it is longer."""
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g * np.minimum(1.0, bound / np.maximum(norms, 1e-30))


def top_share(norms: np.ndarray, fraction: float = 0.01) -> float:
    """The share of ``Σ norms²`` that the top ``fraction`` of rows hold."""
    squares = np.sort(norms**2)[::-1]
    return float(squares[: max(1, int(len(norms) * fraction))].sum() / squares.sum())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between rows of ``a`` and the vector ``b``."""
    return a @ b / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b) + 1e-30)


def batch_agreement(
    g: np.ndarray, batch: int, batches: int, multiples=MULTIPLES, seed: int = 0
) -> dict[str, np.ndarray]:
    """Cosines, one per batch, between batch means and all-sample means: ``plain``; and
    per multiple ``k`` of the median norm, ``clip k`` (clipped batch against the plain
    all-sample mean) and ``clip k, own`` (against the clipped all-sample mean)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(g), (batches, batch))
    mean = g.mean(0)
    out = {"plain": cosine(g[rows].mean(1), mean)}
    median = np.median(np.linalg.norm(g, axis=1))
    for k in multiples:
        clipped = clip_rows(g, k * median)
        batch_means = clipped[rows].mean(1)
        out[f"clip {k:g}"] = cosine(batch_means, mean)
        out[f"clip {k:g}, own"] = cosine(batch_means, clipped.mean(0))
    return out


def report(g: np.ndarray, batch: int, batches: int) -> list[str]:
    norms = np.linalg.norm(g, axis=1)
    lines = [
        f"‖g_i‖ median {np.median(norms):.3g}, p99 {np.percentile(norms, 99):.3g}, "
        f"max {norms.max():.3g}; the top 1% hold {top_share(norms):.0%} of Σ‖g_i‖²; "
        f"‖mean‖ {np.linalg.norm(g.mean(0)):.3g}"
    ]
    for name, cos in batch_agreement(g, batch, batches).items():
        lines.append(
            f"cosine of a batch of {batch} with the mean of all, {name}: median "
            f"{np.median(cos):.3f}, 10th percentile {np.percentile(cos, 10):.3f}"
        )
    median = np.median(norms)
    bias = [f"{k:g}: {cosine(clip_rows(g, k * median).mean(0), g.mean(0)):.3f}" for k in MULTIPLES]
    lines.append(
        "cosine of the clipped mean of all with the plain mean of all, clip " + ", ".join(bias)
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory with a checkpoint")
    parser.add_argument("--jacobians", nargs="+", default=["simulator"])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument(
        "--actions",
        choices=["replayed", "fresh"],
        help="replace the run's svg1_er/svgk_er actions option (fresh: no importance weights)",
    )
    args = parser.parse_args()
    svgx.enable_compilation_cache()
    for source in args.jacobians:
        g = per_transition_gradients(
            args.run, source, args.samples, member=args.member, actions=args.actions
        )
        finite = np.isfinite(g).all(axis=1)
        print(
            f"{args.run}, member {args.member}, {source} Jacobians, actions "
            f"{args.actions or 'as the run'}, {finite.sum()} transitions:"
        )
        if not finite.all():
            print(f"  {int((~finite).sum())} non-finite gradients left out")
        for line in report(g[finite], args.batch, args.batches):
            print("  " + line)


if __name__ == "__main__":
    main()
