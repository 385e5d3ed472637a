"""Training runs as pure functions (SPEC §4–§5): ``make_train(config) -> Train``.

``Train.train(key, hparams) -> (state, metrics)`` is a whole run, one jittable
function, so ``jax.jit(jax.vmap(train.train))(keys, hparams)`` runs many seeds
(and swept hyperparameters) as one program. The same run in pieces:
``state = train.init(key, hparams)``, then ``state, metrics = train.chunk(state,
hparams)`` as often as ``config.chunks`` says; :mod:`svgx.runner` does that,
evaluating and reporting between chunks.

An iteration collects data from ``config.n_envs`` parallel environments, adds it
to the replay database, then updates the model, the critic and the policy, in
that order (paper §5). Algorithms differ only in which estimator the policy
step uses and where its data comes from:

==============  =================================================  ================
algorithm       policy step                                        data
==============  =================================================  ================
``svg_inf``     SVG(∞): whole episodes, no critic (Alg. 1)          latest episodes
``svg1``        SVG(1) with ``V``                                  latest episodes
``svg1_er``     SVG(1) with ``V``, importance-weighted (Alg. 2)    replay
``svgk_er``     SVG(k) on replayed length-k sequences              replay
``svg0_er``     SVG(0) with ``Q`` (Alg. 3)                         replay
``planner``     the recursion along model-simulated trajectories   replayed starts
``dpg``         ``∇θ Q(s, μθ(s))`` with target networks             replay
``actor_critic``likelihood ratio with the TD error of ``V``         latest episodes
``reinforce``   likelihood ratio with returns-to-go, ``V`` baseline latest episodes
==============  =================================================  ================

Numerical safety: every update clips its gradient's global norm; an update
whose loss or gradient is not finite is skipped (parameters and optimiser state
unchanged) and counted. An environment step that produces a non-finite state
(a contact simulation that diverged) ends that episode, is stored with
``s' = s`` and ``r = 0`` and is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

from svgx import critics, estimators, replay
from svgx.config import USES_Q, USES_V, Config, Hyperparams
from svgx.dynamics import LearnedDynamics, SimulatorDynamics
from svgx.model import DynamicsModel, dynamics_model
from svgx.policy import GaussianPolicy, linear_policy, mlp_policy
from svgx.replay import ReplayBuffer, Transition


class EnvState(eqx.Module):
    """The parallel environments of one seed."""

    s: Array  # [n_envs, n_s]
    t: Array  # [n_envs] time index within the episode
    episode_return: Array  # [n_envs] return so far of the running episode


class TrainState(eqx.Module):
    """Everything a run carries from one iteration to the next (one seed)."""

    policy: GaussianPolicy
    policy_target: GaussianPolicy | None  # dpg only
    value: critics.ValueFunction | None
    value_target: critics.ValueFunction | None
    q: critics.QFunction | None
    q_target: critics.QFunction | None
    model: DynamicsModel | None
    policy_opt: optax.OptState
    critic_opt: optax.OptState
    model_opt: optax.OptState
    buffer: ReplayBuffer
    env: EnvState
    key: PRNGKeyArray
    iteration: Array
    env_steps: Array
    updates: Array
    nonfinite_updates: Array
    nonfinite_env_steps: Array
    episodes: Array  # completed episodes
    last_return: Array  # mean return of the episodes completed most recently


class Train(NamedTuple):
    """The pure functions of a run (see the module docstring)."""

    init: Callable
    chunk: Callable
    evaluate: Callable
    train: Callable
    config: Config


# The model's normalisation: statistics of this many replayed transitions, blended
# into the running ones at this rate every iteration (all of it the first time).
STATISTICS_BATCH, STATISTICS_RATE = 1024, 0.05

METRICS = (
    "train_return", "model_nll", "value_loss", "policy_loss", "policy_grad_norm",
    "importance_weight_mean", "importance_weight_max", "nonfinite_updates",
    "nonfinite_env_steps", "env_steps", "episodes",
)  # fmt: skip


def _optimizer(max_grad_norm):
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam())


def _tree_all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def safe_step(module, opt_state, loss_fn, learning_rate, max_grad_norm, *, enabled=True):
    """One clipped Adam step on ``loss_fn(module) -> (loss, aux)``, skipped when the loss or
    the gradient is not finite (or ``enabled`` is false).

    Returns ``(module, opt_state, loss, aux, grad_norm, nonfinite)``.
    """
    (loss, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(module)
    params = eqx.filter(module, eqx.is_inexact_array)
    updates, new_opt_state = _optimizer(max_grad_norm).update(grads, opt_state, params)
    finite = jnp.isfinite(loss) & _tree_all_finite(grads)
    apply = finite & enabled
    new_module = eqx.apply_updates(module, jax.tree.map(lambda u: -learning_rate * u, updates))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)  # noqa: E731
    module = eqx.combine(keep(eqx.filter(new_module, eqx.is_inexact_array), params), module)
    opt_state = keep(new_opt_state, opt_state)
    grad_norm = jnp.where(finite, optax.global_norm(grads), jnp.nan)
    return module, opt_state, loss, aux, grad_norm, (~finite) & enabled


def _init_opt(module, max_grad_norm):
    if module is None:
        return optax.EmptyState()
    return _optimizer(max_grad_norm).init(eqx.filter(module, eqx.is_inexact_array))


def make_train(config: Config) -> Train:
    """The pure functions of a run of ``config`` (frozen, closed over)."""
    env = config.make_env()
    n_envs, horizon = config.n_envs, env.horizon
    time_input = env.time_dependent if config.time_input is None else config.time_input
    critic_horizon = horizon if time_input else None
    needs_model = config.jacobians == "learned"
    uses_v, uses_q = config.algo in USES_V, config.algo in USES_Q
    low, high = env.action_low, env.action_high
    if config.squash and not (jnp.allclose(low, -high) and jnp.allclose(high, high[0])):
        raise ValueError(f"env {env.name!r}: squash=True needs symmetric, equal action bounds")
    scale = float(high[0]) if config.squash else None
    steps_per_iteration = horizon if config.on_policy else config.steps_per_iteration
    updates_per_iteration = config.updates_per_step * steps_per_iteration
    rows = max(config.replay_capacity // n_envs, steps_per_iteration)
    if config.algo == "svgk_er":
        rows = max(rows, config.k)
    iterations_per_chunk = config.iterations // config.chunks
    log_uniform = -jnp.sum(jnp.log(high - low))  # behaviour log-density of random actions

    def dynamics(model):
        return LearnedDynamics(model) if config.jacobians == "learned" else SimulatorDynamics(env)

    # --- initialisation --------------------------------------------------------
    def init(key: PRNGKeyArray, hp: Hyperparams) -> TrainState:
        keys = jax.random.split(key, 7)
        if config.linear_policy:
            policy = linear_policy(
                env.state_size, env.action_size, init_std=hp.init_std, learn_std=config.learn_std
            )
        else:
            policy = mlp_policy(
                env.observe, env.observation_size, env.action_size, key=keys[0],
                hidden=config.policy_hidden, state_dependent_std=config.state_dependent_std,
                init_std=hp.init_std, scale=scale, learn_std=config.learn_std,
            )  # fmt: skip
        value = q = model = None
        if uses_v:
            value = critics.value_function(
                env.observe, env.observation_size, key=keys[1], hidden=config.critic_hidden,
                horizon=critic_horizon,
            )  # fmt: skip
        if uses_q:
            q = critics.q_function(
                env.observe, env.observation_size, env.action_size, key=keys[2],
                hidden=config.critic_hidden, horizon=critic_horizon,
            )  # fmt: skip
        if needs_model:
            model = dynamics_model(
                env.observe, env.observation_size, env.state_size, env.action_size,
                key=keys[3], hidden=config.model_hidden,
            )  # fmt: skip
        s = jax.vmap(env.reset)(jax.random.split(keys[4], n_envs))
        example = Transition(
            s=s, a=jnp.zeros((n_envs, env.action_size), s.dtype), r=jnp.zeros(n_envs, s.dtype),
            s_next=s, t=jnp.zeros(n_envs, jnp.int32), done=jnp.zeros(n_envs, bool),
            log_prob=jnp.zeros(n_envs, s.dtype), noise=jnp.zeros((n_envs, env.noise_size), s.dtype),
        )  # fmt: skip
        zero = jnp.zeros((), jnp.int32)
        critic = value if uses_v else q
        return TrainState(
            policy=policy,
            policy_target=policy if config.algo == "dpg" else None,
            value=value, value_target=value, q=q, q_target=q, model=model,
            policy_opt=_init_opt(policy, hp.max_grad_norm),
            critic_opt=_init_opt(critic, hp.max_grad_norm),
            model_opt=_init_opt(model, hp.max_grad_norm),
            buffer=replay.init(rows, example),
            env=EnvState(s, jnp.zeros(n_envs, jnp.int32), jnp.zeros(n_envs, s.dtype)),
            key=keys[5], iteration=zero, env_steps=zero, updates=zero,
            nonfinite_updates=zero, nonfinite_env_steps=zero, episodes=zero,
            last_return=jnp.zeros((), s.dtype),
        )  # fmt: skip

    # --- acting ----------------------------------------------------------------
    def act(policy, s, key, random, hp):
        """(a, behaviour log-probability) for one environment."""
        key_uniform, key_policy = jax.random.split(key)
        if config.algo == "dpg":
            mean, _ = policy.distribution(s)
            u = mean + hp.exploration_std * jax.random.normal(key_policy, mean.shape, mean.dtype)
            a = policy.squash(u)
        else:
            a, _ = policy.sample(s, key=key_policy)
        uniform = jax.random.uniform(key_uniform, a.shape, a.dtype, low, high)
        a = jnp.where(random, uniform, a)
        log_prob = jnp.where(random, log_uniform, policy.log_prob(s, a))
        return a, log_prob

    def env_step(carry, key, hp):
        policy, env_state, env_steps = carry
        key_act, key_env, key_reset = jax.random.split(key, 3)
        random = env_steps < config.random_steps * n_envs
        a, log_prob = jax.vmap(lambda s, k: act(policy, s, k, random, hp))(
            env_state.s, jax.random.split(key_act, n_envs)
        )
        s_next, r, done, info = jax.vmap(env.step)(env_state.s, a, jax.random.split(key_env, n_envs), env_state.t)
        bad = ~(jnp.all(jnp.isfinite(s_next), axis=-1) & jnp.isfinite(r))
        s_next = jnp.where(bad[:, None], env_state.s, s_next)
        r = jnp.where(bad, 0.0, r)
        done = done | bad
        transition = Transition(
            s=env_state.s, a=a, r=r, s_next=s_next, t=env_state.t, done=done,
            log_prob=log_prob, noise=info["noise"].astype(s_next.dtype),
        )  # fmt: skip
        episode_return = env_state.episode_return + r
        fresh = jax.vmap(env.reset)(jax.random.split(key_reset, n_envs))
        env_state = EnvState(
            s=jnp.where(done[:, None], fresh, s_next),
            t=jnp.where(done, 0, env_state.t + 1),
            episode_return=jnp.where(done, 0.0, episode_return),
        )
        completed = (done.sum(), jnp.where(done, episode_return, 0.0).sum(), bad.sum())
        return (policy, env_state, env_steps + n_envs), (transition, completed)

    def collect(state: TrainState, hp, key):
        env_state = state.env
        if config.on_policy:  # every iteration is one fresh episode per environment
            fresh = jax.vmap(env.reset)(jax.random.split(jax.random.fold_in(key, 1), n_envs))
            env_state = EnvState(fresh, jnp.zeros_like(env_state.t), jnp.zeros_like(env_state.episode_return))
        (_, env_state, env_steps), (rows_, (n_done, return_sum, n_bad)) = jax.lax.scan(
            lambda c, k: env_step(c, k, hp), (state.policy, env_state, state.env_steps),
            jax.random.split(key, steps_per_iteration),
        )  # fmt: skip
        n_done, return_sum = n_done.sum(), return_sum.sum()
        last_return = jnp.where(n_done > 0, return_sum / jnp.maximum(n_done, 1), state.last_return)
        state = eqx.tree_at(
            lambda s: (s.env, s.env_steps, s.episodes, s.last_return, s.nonfinite_env_steps, s.buffer),
            state,
            (env_state, env_steps, state.episodes + n_done, last_return,
             state.nonfinite_env_steps + n_bad.sum(), replay.add_rows(state.buffer, rows_)),
        )  # fmt: skip
        return state, rows_

    # --- updates ---------------------------------------------------------------
    def refresh_statistics(state: TrainState, key):
        """Running normalisation statistics of the model's inputs and outputs, from replay."""
        if not needs_model:
            return state
        batch = replay.sample(state.buffer, key, STATISTICS_BATCH)
        fitted = state.model.with_statistics(batch.s, batch.a, batch.s_next)
        rate = jnp.where(state.iteration == 0, 1.0, STATISTICS_RATE)
        blend = lambda new, old: jax.tree.map(lambda n, o: rate * n + (1 - rate) * o, new, old)  # noqa: E731
        model = eqx.tree_at(
            lambda m: (m.inputs, m.deltas),
            state.model,
            (blend(fitted.inputs, state.model.inputs), blend(fitted.deltas, state.model.deltas)),
        )
        return eqx.tree_at(lambda s: s.model, state, model)

    def update_model(state: TrainState, hp, key, enabled):
        if not needs_model:
            return state, jnp.nan
        batch = replay.sample(state.buffer, key, config.batch_size)

        def loss(model):
            return jnp.mean(jax.vmap(model.nll)(batch.s, batch.a, batch.s_next)), None

        model, opt, nll, _, _, bad = safe_step(
            state.model, state.model_opt, loss, hp.model_lr, hp.max_grad_norm, enabled=enabled
        )
        state = eqx.tree_at(lambda s: (s.model, s.model_opt), state, (model, opt))
        return _count(state, bad), nll

    def update_critic(state: TrainState, hp, batch: Transition, key, weights, enabled):
        """One TD step of this algorithm's critic (``V`` or ``Q``), then its target network."""
        r = hp.reward_scale * batch.r
        if uses_v:
            critic = lambda s: (s.value, s.value_target)  # noqa: E731

            def loss(value):
                return critics.value_td_loss(
                    value, state.value_target, batch.s, batch.t, r, batch.s_next, hp.gamma, weights
                ), None
        elif uses_q:
            critic = lambda s: (s.q, s.q_target)  # noqa: E731
            if config.algo == "dpg":
                a_next = jax.vmap(state.policy_target.mean_action)(batch.s_next)
            else:
                a_next, _ = jax.vmap(lambda s, k: state.policy.sample(s, key=k))(
                    batch.s_next, jax.random.split(key, batch.s.shape[0])
                )
            a_next = jax.lax.stop_gradient(a_next)

            def loss(q):
                return critics.q_td_loss(
                    q, state.q_target, a_next, batch.s, batch.a, batch.t, r, batch.s_next, hp.gamma, weights
                ), None
        else:
            return state, jnp.nan
        online, target = critic(state)
        online, opt, l, _, _, bad = safe_step(
            online, state.critic_opt, loss, hp.critic_lr, hp.max_grad_norm, enabled=enabled
        )
        target = _target_update(state, hp)(target, online)
        state = eqx.tree_at(lambda s: (*critic(s), s.critic_opt), state, (online, target, opt))
        return _count(state, bad), l

    def _target_update(state, hp):
        if config.target_period:
            return lambda target, online: critics.periodic_copy(target, online, state.updates, config.target_period)
        return lambda target, online: critics.polyak_update(target, online, hp.tau)

    def policy_loss_fn(state: TrainState, hp, key, episodes: Transition | None):
        """``(loss(policy) -> (loss, aux), ready)`` for this algorithm's policy step."""
        algo, gamma = config.algo, hp.gamma

        def reward(s, a, t):
            return hp.reward_scale * env.reward(s, a, t)

        if episodes is not None:  # the likelihood-ratio estimators read recorded rewards
            episodes = eqx.tree_at(lambda e: e.r, episodes, hp.reward_scale * episodes.r)

        dyn = dynamics(state.model)
        if algo == "svg_inf":
            return lambda p: estimators.svg_loss(p, dyn, reward, None, episodes, gamma=gamma), True
        if algo == "svg1":
            stretches = jax.tree.map(lambda x: x.reshape(-1, 1, *x.shape[2:]), episodes)
            return lambda p: estimators.svg_loss(p, dyn, reward, state.value, stretches, gamma=gamma), True
        if algo == "actor_critic":
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), episodes)
            return lambda p: estimators.actor_critic_loss(p, state.value, flat, gamma=gamma), True
        if algo == "reinforce":
            return lambda p: estimators.reinforce_loss(p, episodes, gamma=gamma, baseline=state.value), True
        if algo in ("svg1_er", "svgk_er"):
            length = 1 if algo == "svg1_er" else config.k
            ready = replay.count_sequence_starts(state.buffer, length) > 0
            seqs = replay.sample_sequences(state.buffer, key, config.batch_size, length)
            return (
                lambda p: estimators.svg_loss(
                    p, dyn, reward, state.value, seqs, gamma=gamma, truncation=hp.truncation
                ),
                ready,
            )
        batch = replay.sample(state.buffer, key, config.batch_size)
        if algo == "svg0_er":
            return lambda p: estimators.svg0_loss(p, state.q, batch, truncation=hp.truncation), True
        if algo == "planner":
            key_plan = jax.random.fold_in(key, 1)
            return (
                lambda p: estimators.planner_loss(
                    p, dyn, reward, state.value, batch.s, batch.t, key=key_plan,
                    steps=config.planner_horizon, gamma=gamma,
                ),
                True,
            )  # fmt: skip
        if algo == "dpg":

            def loss(p):
                q = jax.vmap(lambda s, t: state.q(s, p.mean_action(s), t))(batch.s, batch.t)
                return -jnp.mean(q), {}

            return loss, True
        raise AssertionError(algo)  # Config checks the name

    def update_policy(state: TrainState, hp, key, episodes, enabled):
        loss_fn, ready = policy_loss_fn(state, hp, key, episodes)
        policy, opt, loss, aux, grad_norm, bad = safe_step(
            state.policy, state.policy_opt, loss_fn, hp.policy_lr, hp.max_grad_norm, enabled=enabled & ready
        )
        state = eqx.tree_at(lambda s: (s.policy, s.policy_opt), state, (policy, opt))
        if config.algo == "dpg":
            state = eqx.tree_at(
                lambda s: s.policy_target, state, critics.polyak_update(state.policy_target, state.policy, hp.tau)
            )
        w = aux.get("importance_weight", jnp.ones(1)) if isinstance(aux, dict) else jnp.ones(1)
        return _count(state, bad), (loss, grad_norm, jnp.mean(w), jnp.max(w))

    def critic_batch(state: TrainState, hp, key, episodes):
        """Transitions for a critic update, with their importance weights."""
        if config.on_policy:
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), episodes)
            index = jax.random.randint(key, (config.batch_size,), 0, flat.t.shape[0])
            batch = jax.tree.map(lambda x: x[index], flat)
            return batch, jnp.ones(config.batch_size, batch.s.dtype)
        batch = replay.sample(state.buffer, key, config.batch_size)
        if config.algo == "dpg":  # deterministic target policy: no ratio of densities
            return batch, jnp.ones(config.batch_size, batch.s.dtype)
        log_p = jax.vmap(state.policy.log_prob)(batch.s, batch.a)
        return batch, critics.truncated_importance_weights(log_p, batch.log_prob, hp.truncation)

    # --- one iteration -----------------------------------------------------------
    def iteration(state: TrainState, hp: Hyperparams):
        key, key_collect, key_updates, key_policy = jax.random.split(state.key, 4)
        state = eqx.tree_at(lambda s: s.key, state, key)
        state, rows_ = collect(state, hp, key_collect)
        state = refresh_statistics(state, jax.random.fold_in(key_updates, 7))
        episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rows_) if config.on_policy else None
        learning = state.env_steps > config.random_steps * n_envs

        def one_update(state, key):
            key_model, key_critic, key_target, key_pol = jax.random.split(key, 4)
            state, nll = update_model(state, hp, key_model, learning)
            batch, weights = critic_batch(state, hp, key_critic, episodes)
            state, value_loss = update_critic(state, hp, batch, key_target, weights, learning)
            stats = (jnp.nan, jnp.nan, jnp.nan, jnp.nan)
            if not config.on_policy:
                state, stats = update_policy(state, hp, key_pol, None, learning)
            state = eqx.tree_at(lambda s: s.updates, state, state.updates + 1)
            return state, (nll, value_loss, *stats)

        state, per_update = jax.lax.scan(one_update, state, jax.random.split(key_updates, updates_per_iteration))
        nll, value_loss, policy_loss, grad_norm, w_mean, w_max = (jnp.nanmean(x) for x in per_update)
        if config.on_policy:
            state, (policy_loss, grad_norm, w_mean, w_max) = update_policy(state, hp, key_policy, episodes, learning)
        state = eqx.tree_at(lambda s: s.iteration, state, state.iteration + 1)
        metrics = dict(
            train_return=state.last_return, model_nll=nll, value_loss=value_loss,
            policy_loss=policy_loss, policy_grad_norm=grad_norm,
            importance_weight_mean=w_mean, importance_weight_max=w_max,
            nonfinite_updates=state.nonfinite_updates, nonfinite_env_steps=state.nonfinite_env_steps,
            env_steps=state.env_steps, episodes=state.episodes,
        )  # fmt: skip
        return state, metrics

    def chunk(state: TrainState, hp: Hyperparams):
        """``config.iterations / config.chunks`` iterations; metrics averaged over them
        (counters: their value at the end of the chunk)."""
        state, per_iteration = jax.lax.scan(lambda s, _: iteration(s, hp), state, None, length=iterations_per_chunk)
        counters = ("nonfinite_updates", "nonfinite_env_steps", "env_steps", "episodes", "train_return")
        metrics = {
            name: (values[-1] if name in counters else jnp.nanmean(values))
            for name, values in per_iteration.items()
        }
        return state, metrics

    def evaluate(state: TrainState, key: PRNGKeyArray):
        """``eval_episodes`` episodes with the mean action: mean return and success rate."""
        from svgx import rollout

        data = rollout.episodes(env, state.policy, key, config.eval_episodes, deterministic=True)
        success = jax.vmap(env.success)(data.s_next[:, -1])
        return dict(eval_return=data.r.sum(1).mean(), eval_success=success.mean())

    def train(key: PRNGKeyArray, hp: Hyperparams):
        """The whole run: ``(final state, metrics with a leading axis of chunks)``."""
        state = init(key, hp)
        return jax.lax.scan(lambda s, _: chunk(s, hp), state, None, length=config.chunks)

    return Train(init=init, chunk=chunk, evaluate=evaluate, train=train, config=config)


def _count(state: TrainState, bad) -> TrainState:
    return eqx.tree_at(lambda s: s.nonfinite_updates, state, state.nonfinite_updates + bad.astype(jnp.int32))


