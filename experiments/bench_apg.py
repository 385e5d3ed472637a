"""SVG(∞) with the simulator's Jacobians against Brax APG: the time per policy gradient,
its ratio, and the cosine between the two gradients at the same policy.

Both differentiate the return of a batch of rollouts through the same MJX physics
(the svgx task, presented to Brax by :class:`envs.brax_adapter.BraxEnv`). Brax's APG
(``brax/training/agents/apg/train.py``, its ``loss`` and ``env_step``) back-propagates
through the rollout it simulates, in one pass. svgx's ``svg_inf`` first records
episodes (:func:`svgx.rollout.episodes`), then rebuilds them from the inferred noises
and back-propagates (:func:`svgx.estimators.svg_loss`), which is what lets a learned
model stand in for the simulator. Both are timed here as compiled programs on the
same ``n_envs`` episodes of ``horizon`` steps and the same policy width; svgx's time
is reported with and without recording the episodes.

The APG loss below is Brax's, line for line, with its network
(``apg_networks.make_apg_networks``); the network is built with tanh units and without
layer norm, as svgx's policy MLP, so that the same weights define both policies. At
the deterministic policy (mean actions; η = 0 for svgx, the distribution's mode for
Brax) on a deterministic task the two gradients are the same quantity, up to the
scale of Brax's mean over steps, and their cosine (over the shared weights: the hidden
layers and the mean rows of the output layer) checks it.

    python -m experiments.bench_apg --env cartpole --horizon 100 --n-envs 16
    python -m experiments.bench_apg --env hand --horizon 100 --n-envs 16
"""

from __future__ import annotations

import dataclasses
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro
from brax.envs.wrappers.training import VmapWrapper
from brax.training.agents.apg import networks as apg_networks

import envs
from envs.brax_adapter import BraxEnv
from svgx import estimators, rollout
from svgx.dynamics import SimulatorDynamics
from svgx.policy import mlp_policy


@dataclasses.dataclass(frozen=True)
class Args:
    env: str = "cartpole"
    """task name."""
    horizon: int = 100
    """episode length, and APG's truncation length (whole episodes for both)."""
    n_envs: int = 16
    """episodes per gradient."""
    hidden: tuple[int, ...] = (100, 100)
    """policy widths (svgx's default)."""
    repeats: int = 20
    """timed calls of each compiled program, in turn (the median is reported)."""
    seed: int = 0


def brax_network(env, hidden):
    return apg_networks.make_apg_networks(
        env.observation_size,
        env.action_size,
        hidden_layer_sizes=hidden,
        activation=jnp.tanh,
        layer_norm=False,
    )


def apg_loss(network, brax_env, horizon, deterministic, policy_params, env_state, key):
    """Brax APG's ``loss`` (brax/training/agents/apg/train.py), observation normaliser off
    (its default): ``−mean`` of the rewards of a ``horizon``-step rollout."""
    make_policy = apg_networks.make_inference_fn(network)
    policy = make_policy((None, policy_params), deterministic=deterministic)

    def env_step(carry, _):
        state, key = carry
        key, key_sample = jax.random.split(key)
        actions = policy(state.obs, key_sample)[0]
        nstate = brax_env.step(state, actions)
        return (nstate, key), nstate.reward

    _, rewards = jax.lax.scan(env_step, (env_state, key), jnp.arange(horizon))
    return -jnp.mean(rewards)


def svgx_policy_from_brax(env, hidden, params, key):
    """An svgx policy whose mean network has Brax's weights (Flax kernels are ``[in, out]``;
    the output layer's first ``n_a`` columns are the mean, the rest Brax's scale)."""
    policy = mlp_policy(env.observe, env.observation_size, env.action_size, key=key, hidden=hidden)
    dense = [params["params"][f"hidden_{i}"] for i in range(len(hidden) + 1)]
    n_a = env.action_size
    weights = [d["kernel"].T for d in dense[:-1]] + [dense[-1]["kernel"][:, :n_a].T]
    biases = [d["bias"] for d in dense[:-1]] + [dense[-1]["bias"][:n_a]]
    return eqx.tree_at(
        lambda p: [leaf for layer in p.net.layers for leaf in (layer.weight, layer.bias)],
        policy,
        [leaf for pair in zip(weights, biases, strict=True) for leaf in pair],
    )


def shared_gradient_of_brax(grads, n_layers, n_a):
    """Brax's gradient on the weights svgx's policy has, flattened in svgx's order."""
    dense = [grads["params"][f"hidden_{i}"] for i in range(n_layers)]
    parts = []
    for i, d in enumerate(dense):
        kernel, bias = d["kernel"], d["bias"]
        if i == n_layers - 1:
            kernel, bias = kernel[:, :n_a], bias[:n_a]
        parts += [kernel.T.ravel(), bias.ravel()]
    return jnp.concatenate(parts)


def flat_svgx_gradient(grads):
    return jnp.concatenate(
        [leaf.ravel() for layer in grads.net.layers for leaf in (layer.weight, layer.bias)]
    )


def timed(calls: dict, repeats: int) -> tuple[dict, dict]:
    """``({name: compile seconds}, {name: median seconds per call})`` of jitted calls
    ``{name: (function, args)}``, timed in turn within each repeat, so that a change in
    the machine's load (these machines are shared) falls on all of them alike."""
    compile_times, times = {}, {name: [] for name in calls}
    for name, (function, args) in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        compile_times[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, (function, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(function(*args))
            times[name].append(time.perf_counter() - start)
    return compile_times, {name: float(np.median(t)) for name, t in times.items()}


def measure(args: Args) -> dict[str, float]:
    env = envs.make(args.env, horizon=args.horizon)
    brax_env = VmapWrapper(BraxEnv(env))  # as Brax's training wrapper batches it
    network = brax_network(env, args.hidden)
    key_net, key_policy, key_episodes, key_apg = jax.random.split(jax.random.key(args.seed), 4)
    params = network.policy_network.init(key_net)
    policy = svgx_policy_from_brax(env, args.hidden, params, key_policy)
    dynamics = SimulatorDynamics(env)

    # The same initial states for both: svgx's episodes' first states.
    def record(policy, key, deterministic):
        return rollout.episodes(env, policy, key, args.n_envs, deterministic=deterministic)

    def brax_states(s_0):
        state = brax_env.reset(jax.random.split(key_apg, args.n_envs))
        return state.replace(pipeline_state=s_0, obs=jax.vmap(env.observe)(s_0))

    def svg_inf(policy, episodes):
        grads, _ = estimators.policy_gradient(
            estimators.svg_loss, policy, dynamics, env.reward, None, episodes, gamma=1.0
        )
        return grads

    def apg_gradient(deterministic, params, state):
        loss = functools.partial(apg_loss, network, brax_env, args.horizon, deterministic)
        return jax.grad(loss)(params, state, key_apg)

    # --- the same quantity: the deterministic policy's gradient --------------------
    episodes = jax.jit(record, static_argnums=2)(policy, key_episodes, True)
    state = brax_states(episodes.s[:, 0])
    g_svgx = flat_svgx_gradient(jax.jit(svg_inf)(policy, episodes))
    g_apg = -shared_gradient_of_brax(  # the ascent direction, as svgx's estimators give
        jax.jit(apg_gradient, static_argnums=0)(True, params, state),
        len(args.hidden) + 1,
        env.action_size,
    )
    cosine = float(jnp.vdot(g_svgx, g_apg) / (jnp.linalg.norm(g_svgx) * jnp.linalg.norm(g_apg)))

    # --- time per gradient, stochastic policies as each trains ----------------------
    record_jit = jax.jit(record, static_argnums=2)
    svg_jit = jax.jit(svg_inf)
    apg_jit = jax.jit(apg_gradient, static_argnums=0)
    episodes = record_jit(policy, key_episodes, False)
    compile_s, seconds = timed(
        {
            "record": (record_jit, (policy, key_episodes, False)),
            "svg": (svg_jit, (policy, episodes)),
            "apg": (apg_jit, (False, params, state)),
        },
        args.repeats,
    )
    return dict(
        cosine=cosine,
        apg_ms=1e3 * seconds["apg"],
        svgx_gradient_ms=1e3 * seconds["svg"],
        svgx_record_ms=1e3 * seconds["record"],
        ratio_gradient=seconds["svg"] / seconds["apg"],
        ratio_with_recording=(seconds["svg"] + seconds["record"]) / seconds["apg"],
        compile_apg_s=compile_s["apg"],
        compile_svgx_s=compile_s["svg"] + compile_s["record"],
    )


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    from svgx import enable_compilation_cache

    enable_compilation_cache()
    m = measure(args)
    print(
        f"| {args.env} (horizon {args.horizon}, {args.n_envs} episodes, policy {args.hidden}) "
        f"| {m['cosine']:.6f} | {m['apg_ms']:.1f} | {m['svgx_gradient_ms']:.1f} "
        f"| {m['svgx_record_ms']:.1f} | {m['ratio_gradient']:.2f} "
        f"| {m['ratio_with_recording']:.2f} | {m['compile_apg_s']:.0f} "
        f"| {m['compile_svgx_s']:.0f} |"
    )


if __name__ == "__main__":
    main()
