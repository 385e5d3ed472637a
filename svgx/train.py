"""Training runs as pure functions: ``make_train(config) -> Train``.

``Train.train(key, hparams) -> (state, metrics)`` is a whole run, one jittable
function, so ``jax.jit(jax.vmap(train.train))(keys, hparams)`` runs many seeds
(and swept hyperparameters) as one program. The same run in pieces:
``state = train.init(key, hparams)``, then ``state, metrics = train.chunk(state,
hparams)`` as often as ``config.chunks`` says; :mod:`svgx.runner` does that,
evaluating and reporting between chunks.

One loop serves every algorithm (:mod:`svgx.algorithms`). An iteration collects
data from ``config.n_envs`` parallel environments into the replay database, then
updates the model, the critic and the policy, in that order (paper §5, Alg. 2).
The loop asks the algorithm what it needs: its data (the latest episodes, with
one policy step per iteration, or replay, with a policy step at every update),
its critic (``V``, ``Q`` or none), whether it takes a Jacobian source, how it
acts, its policy loss and its own state. See docs/design.md for the design.

At the end of each chunk, the learning diagnostics (README, "Metrics": the
critic's explained variance, the model's one-step and Jacobian errors, the algorithm's
own, such as the SVG gradient's reward and value parts) are measured once, on one
fresh batch.

Numerical safety: every update clips its gradient's global norm; an update
whose loss or gradient is not finite is skipped (parameters and optimiser state
unchanged) and counted. An environment step that produces a non-finite state, or
one beyond the task's ``max_state_abs`` (a contact simulation that diverged), ends
that episode, is stored with ``s' = s`` and ``r = 0`` and is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from svgx import critics, estimators, replay, rollout
from svgx.algorithms import PolicyInputs
from svgx.config import Config, Hyperparams
from svgx.divergence import all_finite
from svgx.dynamics import jacobian_errors, make_dynamics
from svgx.model import DynamicsModel, dynamics_model, one_step_errors
from svgx.policy import GaussianPolicy, linear_policy, mlp_policy
from svgx.replay import ReplayBuffer, Transition


class EnvState(eqx.Module):
    """The parallel environments of one seed."""

    s: Array  # [n_envs, n_s]
    t: Array  # [n_envs] time index within the episode
    episode_return: Array  # [n_envs] return so far of the running episode


class TrainState(eqx.Module):
    """Everything a run carries from one iteration to the next (one seed).

    ``critic`` and ``critic_target`` are ``V`` or ``Q`` (None for an algorithm
    without a critic), ``model`` the learned dynamics (None with simulator
    Jacobians), ``extra`` the algorithm's own state (e.g. DPG's target policy).
    """

    policy: GaussianPolicy
    critic: critics.ValueFunction | critics.QFunction | None
    critic_target: critics.ValueFunction | critics.QFunction | None
    model: DynamicsModel | None
    extra: PyTree
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
    # ``chunk`` is ``iterate`` and then ``diagnostics`` (its learning metrics): apart,
    # the runner compiles the diagnostics while the first chunk trains.
    iterate: Callable
    diagnostics: Callable


# The model's normalisation: statistics of this many replayed transitions, blended
# into the running ones at this rate every iteration (all of it the first time).
STATISTICS_BATCH, STATISTICS_RATE = 1024, 0.05

# The chunk-end diagnostics draw on jax.random.fold_in(state.key, DIAGNOSTICS_SALT).
DIAGNOSTICS_SALT = 0x5D1A6
# The model's Jacobian errors use at most this many of the diagnostics' model batch.
JACOBIAN_BATCH = 32

# Metrics of a chunk that are counters or the latest value (the rest are averaged).
COUNTERS = (
    "nonfinite_updates",
    "nonfinite_env_steps",
    "env_steps",
    "updates",
    "episodes",
    "train_return",
)


def _optimizer(max_grad_norm):
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam())


def safe_step(module, opt_state, loss_fn, learning_rate, max_grad_norm, *, enabled=True):
    """One clipped Adam step on ``loss_fn(module) -> (loss, aux)``, skipped when the loss or
    the gradient is not finite (or ``enabled`` is false).

    Returns ``(module, opt_state, loss, aux, grad_norm, nonfinite)``.
    """
    (loss, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(module)
    params = eqx.filter(module, eqx.is_inexact_array)
    updates, new_opt_state = _optimizer(max_grad_norm).update(grads, opt_state, params)
    finite = jnp.isfinite(loss) & all_finite(grads)
    apply = finite & enabled
    new_module = eqx.apply_updates(module, jax.tree.map(lambda u: -learning_rate * u, updates))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)  # noqa: E731
    module = eqx.combine(keep(eqx.filter(new_module, eqx.is_inexact_array), params), module)
    opt_state = keep(new_opt_state, opt_state)
    grad_norm = jnp.where(finite, optax.tree.norm(grads), jnp.nan)
    return module, opt_state, loss, aux, grad_norm, (~finite) & enabled


def _init_opt(module, max_grad_norm):
    if module is None:
        return optax.EmptyState()
    return _optimizer(max_grad_norm).init(eqx.filter(module, eqx.is_inexact_array))


def make_train(config: Config) -> Train:
    """The pure functions of a run of ``config`` (frozen, closed over)."""
    env = config.make_env()
    algorithm = config.algorithm
    n_envs, horizon = config.n_envs, env.horizon
    time_input = env.time_dependent if config.time_input is None else config.time_input
    critic_horizon = horizon if time_input else None
    needs_model = algorithm.uses_dynamics and config.jacobians == "learned"
    on_policy = algorithm.data == "episodes"
    low, high = env.action_low, env.action_high
    scale = float(high[0]) if config.squash else None
    steps_per_iteration = horizon if on_policy else config.steps_per_iteration
    updates_per_iteration = config.updates_per_step * steps_per_iteration
    rows = max(config.replay_capacity // n_envs, steps_per_iteration, algorithm.sequence_length)
    iterations_per_chunk = config.iterations // config.chunks
    log_uniform = -jnp.sum(jnp.log(high - low))  # behaviour log-density of random actions

    # --- initialisation --------------------------------------------------------
    def init_critic(key_v, key_q):
        """This algorithm's critic, if any (``V`` and ``Q`` draw on different keys)."""
        if algorithm.critic == "v":
            return critics.value_function(
                env.observe,
                env.observation_size,
                key=key_v,
                hidden=config.critic_hidden,
                horizon=critic_horizon,
            )
        if algorithm.critic == "q":
            return critics.q_function(
                env.observe,
                env.observation_size,
                env.action_size,
                key=key_q,
                hidden=config.critic_hidden,
                horizon=critic_horizon,
            )
        return None

    def init(key: PRNGKeyArray, hp: Hyperparams) -> TrainState:
        keys = jax.random.split(key, 7)
        if config.linear_policy:
            policy = linear_policy(
                env.state_size, env.action_size, init_std=hp.init_std, learn_std=config.learn_std
            )
        else:
            policy = mlp_policy(
                env.observe,
                env.observation_size,
                env.action_size,
                key=keys[0],
                hidden=config.policy_hidden,
                state_dependent_std=config.state_dependent_std,
                init_std=hp.init_std,
                scale=scale,
                learn_std=config.learn_std,
            )
        critic = init_critic(keys[1], keys[2])
        model = None
        if needs_model:
            model = dynamics_model(
                env.observe,
                env.observation_size,
                env.state_size,
                env.action_size,
                key=keys[3],
                hidden=config.model_hidden,
            )
        s = jax.vmap(env.reset)(jax.random.split(keys[4], n_envs))
        example = Transition(
            s=s,
            a=jnp.zeros((n_envs, env.action_size), s.dtype),
            r=jnp.zeros(n_envs, s.dtype),
            s_next=s,
            t=jnp.zeros(n_envs, jnp.int32),
            done=jnp.zeros(n_envs, bool),
            log_prob=jnp.zeros(n_envs, s.dtype),
            noise=jnp.zeros((n_envs, env.noise_size), s.dtype),
        )
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            policy=policy,
            critic=critic,
            critic_target=critic,
            model=model,
            extra=algorithm.init_state(policy),
            policy_opt=_init_opt(policy, hp.max_grad_norm),
            critic_opt=_init_opt(critic, hp.max_grad_norm),
            model_opt=_init_opt(model, hp.max_grad_norm),
            buffer=replay.init(rows, example),
            env=EnvState(s, jnp.zeros(n_envs, jnp.int32), jnp.zeros(n_envs, s.dtype)),
            key=keys[5],
            iteration=zero,
            env_steps=zero,
            updates=zero,
            nonfinite_updates=zero,
            nonfinite_env_steps=zero,
            episodes=zero,
            last_return=jnp.zeros((), s.dtype),
        )

    # --- acting ----------------------------------------------------------------
    def act(policy, extra, s, key, random):
        """(a, behaviour log-probability) for one environment."""
        key_uniform, key_policy = jax.random.split(key)
        a = algorithm.act(policy, extra, s, key=key_policy)
        uniform = jax.random.uniform(key_uniform, a.shape, a.dtype, low, high)
        a = jnp.where(random, uniform, a)
        log_prob = jnp.where(random, log_uniform, policy.log_prob(s, a))
        return a, log_prob

    def env_step(carry, key, policy, extra):
        env_state, env_steps = carry
        key_act, key_env, key_reset = jax.random.split(key, 3)
        random = env_steps < config.random_steps * n_envs
        a, log_prob = jax.vmap(lambda s, k: act(policy, extra, s, k, random))(
            env_state.s, jax.random.split(key_act, n_envs)
        )
        s_next, r, done, info = jax.vmap(env.step)(
            env_state.s, a, jax.random.split(key_env, n_envs), env_state.t
        )
        bad = env.diverged(s_next, r)
        s_next = jnp.where(bad[:, None], env_state.s, s_next)
        r = jnp.where(bad, 0.0, r)
        done = done | bad
        transition = Transition(
            s=env_state.s,
            a=a,
            r=r,
            s_next=s_next,
            t=env_state.t,
            done=done,
            log_prob=log_prob,
            noise=info["noise"].astype(s_next.dtype),
        )
        episode_return = env_state.episode_return + r
        fresh = jax.vmap(env.reset)(jax.random.split(key_reset, n_envs))
        env_state = EnvState(
            s=jnp.where(done[:, None], fresh, s_next),
            t=jnp.where(done, 0, env_state.t + 1),
            episode_return=jnp.where(done, 0.0, episode_return),
        )
        completed = (done.sum(), jnp.where(done, episode_return, 0.0).sum(), bad.sum())
        return (env_state, env_steps + n_envs), (transition, completed)

    def collect(state: TrainState, key):
        """``steps_per_iteration`` steps of every environment, into the replay database;
        also returns them (leaves ``[steps, n_envs, …]``)."""
        env_state = state.env
        if on_policy:  # every iteration is one fresh episode per environment
            fresh = jax.vmap(env.reset)(jax.random.split(jax.random.fold_in(key, 1), n_envs))
            env_state = EnvState(
                fresh, jnp.zeros_like(env_state.t), jnp.zeros_like(env_state.episode_return)
            )
        (env_state, env_steps), (rows_, (n_done, return_sum, n_bad)) = jax.lax.scan(
            lambda c, k: env_step(c, k, state.policy, state.extra),
            (env_state, state.env_steps),
            jax.random.split(key, steps_per_iteration),
        )
        n_done, return_sum = n_done.sum(), return_sum.sum()
        last_return = jnp.where(n_done > 0, return_sum / jnp.maximum(n_done, 1), state.last_return)
        state = eqx.tree_at(
            lambda s: (
                s.env,
                s.env_steps,
                s.episodes,
                s.last_return,
                s.nonfinite_env_steps,
                s.buffer,
            ),
            state,
            (
                env_state,
                env_steps,
                state.episodes + n_done,
                last_return,
                state.nonfinite_env_steps + n_bad.sum(),
                replay.add_rows(state.buffer, rows_),
            ),
        )
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
        """One maximum-likelihood step of the dynamics model on replayed transitions (paper §5)."""
        if not needs_model:
            return state, {}
        batch = replay.sample(state.buffer, key, config.batch_size)

        def loss(model):
            return jnp.mean(jax.vmap(model.nll)(batch.s, batch.a, batch.s_next)), None

        model, opt, nll, _, _, bad = safe_step(
            state.model, state.model_opt, loss, hp.model_lr, hp.max_grad_norm, enabled=enabled
        )
        state = eqx.tree_at(lambda s: (s.model, s.model_opt), state, (model, opt))
        return _count(state, bad), {"model_nll": nll}

    def critic_batch(state: TrainState, hp, key, episodes):
        """Transitions for a critic update and their weights: a random batch of the latest
        episodes (weights 1), or of replay (weights by :meth:`Algorithm.critic_weights`)."""
        if on_policy:
            flat = rollout.per_step(episodes)
            index = jax.random.randint(key, (config.batch_size,), 0, flat.t.shape[0])
            batch = jax.tree.map(lambda x: x[index], flat)
            return batch, jnp.ones(config.batch_size, batch.s.dtype)
        batch = replay.sample(state.buffer, key, config.batch_size)
        return batch, algorithm.critic_weights(state.policy, batch, hp)

    def n_step_batch(state: TrainState, hp, key):
        """``V``'s data for n-step targets (``critic_n_step`` > 1): ``(batch, weights,
        (γ^k, t_k))``, ``batch.r`` and ``batch.s_next`` as :func:`critics.n_step_target`
        makes them, weighted by the truncated product of the k importance ratios."""
        runs, inside = replay.sample_n_step(
            state.buffer, key, config.batch_size, config.critic_n_step
        )
        log_p = jax.vmap(jax.vmap(state.policy.log_prob))(runs.s, runs.a)
        log_ratio = jnp.where(inside, log_p - runs.log_prob, 0.0)
        weights = critics.truncated_importance_weights(
            log_ratio, jnp.zeros_like(log_ratio), hp.truncation
        )
        r, s_k, t_k, discount = critics.n_step_target(runs, inside, hp.gamma)
        batch = eqx.tree_at(
            lambda b: (b.r, b.s_next), jax.tree.map(lambda x: x[:, 0], runs), (r, s_k)
        )
        return batch, weights, (discount, t_k)

    def fresh_value_batch(state: TrainState, hp, key):
        """``V``'s data simulated with the current policy's own actions
        (``algorithm.dynamics_targets``): ``(batch, weights 1, (γ^k, t_k))``, ``batch.r``
        and ``batch.s_next`` as :func:`n_step_batch` makes them, from ``critic_n_step``
        steps through the Jacobian source's dynamics from replayed ``(s, t)``
        (:func:`estimators.simulated_return`)."""
        key_batch, key_rollout = jax.random.split(key)
        batch = replay.sample(state.buffer, key_batch, config.batch_size)
        dynamics = make_dynamics(config.jacobians, env, state.model)
        total, s_k, t_k, discount = jax.vmap(
            lambda s, t, key: estimators.simulated_return(
                state.policy,
                dynamics,
                env.reward,
                s,
                t,
                key=key,
                steps=config.critic_n_step,
                gamma=hp.gamma,
                horizon=horizon,
            )
        )(batch.s, batch.t, jax.random.split(key_rollout, config.batch_size))
        batch = eqx.tree_at(lambda b: (b.r, b.s_next), batch, (total, s_k))
        return batch, jnp.ones(config.batch_size, total.dtype), (discount, t_k)

    def critic_values(critic, batch: Transition):
        """``V(s, t)`` or ``Q(s, a, t)`` of a batch of transitions."""
        if algorithm.critic == "q":
            return jax.vmap(critic)(batch.s, batch.a, batch.t)
        return jax.vmap(critic)(batch.s, batch.t)

    def td_targets(state: TrainState, hp, key_batch, key_next, episodes):
        """The critic's regression problem ``(batch, weights, y)``: a batch, its weights and
        its TD(0) targets from the target network (n-step for ``V`` with ``critic_n_step``
        > 1); ``Q``'s next actions are the algorithm's."""
        if algorithm.dynamics_targets and algorithm.critic == "v":
            batch, weights, (discount, t_next) = fresh_value_batch(state, hp, key_batch)
        elif config.critic_n_step > 1:
            batch, weights, (discount, t_next) = n_step_batch(state, hp, key_batch)
        else:
            batch, weights = critic_batch(state, hp, key_batch, episodes)
            discount, t_next = hp.gamma, None
        r, target = hp.reward_scale * batch.r, state.critic_target
        if algorithm.critic == "q":
            a_next = algorithm.next_actions(state.policy, state.extra, batch.s_next, key=key_next)
            a_next = jax.lax.stop_gradient(a_next)
            y = critics.q_td_target(target, a_next, batch.t, r, batch.s_next, hp.gamma)
        else:
            y = critics.value_td_target(target, batch.t, r, batch.s_next, discount, t_next)
        return batch, weights, y

    def update_critic(state: TrainState, hp, key_batch, key_next, episodes, enabled):
        """One weighted TD step of the critic towards its target network (:func:`td_targets`),
        then the target's update (paper §5, Alg. 4)."""
        if algorithm.critic is None:
            return state, {}
        batch, weights, y = td_targets(state, hp, key_batch, key_next, episodes)

        def loss(critic):
            return critics.td_regression_loss(critic_values(critic, batch), y, weights), None

        online, opt, value_loss, _, _, bad = safe_step(
            state.critic, state.critic_opt, loss, hp.critic_lr, hp.max_grad_norm, enabled=enabled
        )
        target = state.critic_target
        if config.target_period:
            target = critics.periodic_copy(target, online, state.updates, config.target_period)
        else:
            target = critics.polyak_update(target, online, hp.tau)
        state = eqx.tree_at(
            lambda s: (s.critic, s.critic_target, s.critic_opt), state, (online, target, opt)
        )
        return _count(state, bad), {"value_loss": value_loss}

    def entropy_states(state: TrainState, key, episodes):
        """States where the entropy bonus is measured: the policy step's data (the latest
        episodes, or a replayed batch)."""
        if episodes is not None:
            return episodes.s.reshape(-1, episodes.s.shape[-1])
        return replay.sample(state.buffer, key, config.batch_size).s

    def policy_inputs(state: TrainState, hp, episodes) -> PolicyInputs:
        """What the algorithm's policy loss reads (rewards scaled by ``hp.reward_scale``)."""
        reward = lambda s, a, t: hp.reward_scale * env.reward(s, a, t)  # noqa: E731
        if episodes is not None:  # the likelihood-ratio estimators read recorded rewards
            episodes = eqx.tree_at(lambda e: e.r, episodes, hp.reward_scale * episodes.r)
        dynamics = (
            make_dynamics(config.jacobians, env, state.model) if algorithm.uses_dynamics else None
        )
        return PolicyInputs(
            critic=state.critic,
            dynamics=dynamics,
            reward=reward,
            episodes=episodes,
            buffer=state.buffer,
            batch_size=config.batch_size,
            hp=hp,
            extra=state.extra,
        )

    def update_policy(state: TrainState, hp, key, episodes, enabled):
        """One step of the algorithm's policy loss, then its own state."""
        estimator_loss, ready = algorithm.policy_loss(policy_inputs(state, hp, episodes), key=key)
        states = entropy_states(state, jax.random.fold_in(key, 2), episodes)
        eta = jax.random.normal(
            jax.random.fold_in(key, 3), (states.shape[0], env.action_size), states.dtype
        )

        def loss_fn(policy):  # the algorithm's own loss when entropy_coef == 0
            loss, aux = estimator_loss(policy)
            entropy = jnp.mean(jax.vmap(policy.entropy_sample)(states, eta))
            return loss - hp.entropy_coef * entropy, aux

        policy, opt, loss, aux, grad_norm, bad = safe_step(
            state.policy,
            state.policy_opt,
            loss_fn,
            hp.policy_lr,
            hp.max_grad_norm,
            enabled=enabled & ready,
        )
        extra = algorithm.update_state(state.extra, policy, hp)
        state = eqx.tree_at(
            lambda s: (s.policy, s.policy_opt, s.extra),
            state,
            (policy, opt, extra),
            is_leaf=lambda x: x is None,
        )
        metrics = {
            "policy_loss": loss,
            "policy_grad_norm": grad_norm,
            **algorithm.policy_metrics(aux),
        }
        return _count(state, bad), metrics

    # --- one iteration -----------------------------------------------------------
    def iteration(state: TrainState, hp: Hyperparams):
        key, key_collect, key_updates, key_policy = jax.random.split(state.key, 4)
        state = eqx.tree_at(lambda s: s.key, state, key)
        state, rows_ = collect(state, key_collect)
        state = refresh_statistics(state, jax.random.fold_in(key_updates, 7))
        episodes = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rows_) if on_policy else None
        learning = state.env_steps > config.random_steps * n_envs

        def one_update(state, key):
            key_model, key_batch, key_next, key_policy = jax.random.split(key, 4)
            state, metrics = update_model(state, hp, key_model, learning)
            state, critic_metrics = update_critic(
                state, hp, key_batch, key_next, episodes, learning
            )
            metrics |= critic_metrics
            if not on_policy:
                state, policy_metrics = update_policy(state, hp, key_policy, None, learning)
                metrics |= policy_metrics
            state = eqx.tree_at(lambda s: s.updates, state, state.updates + 1)
            return state, metrics

        state, per_update = jax.lax.scan(
            one_update, state, jax.random.split(key_updates, updates_per_iteration)
        )
        metrics = {name: jnp.nanmean(values) for name, values in per_update.items()}
        if on_policy:
            state, policy_metrics = update_policy(state, hp, key_policy, episodes, learning)
            metrics |= policy_metrics
        state = eqx.tree_at(lambda s: s.iteration, state, state.iteration + 1)
        metrics |= dict(
            policy_std=jnp.mean(jax.vmap(lambda s: state.policy.distribution(s)[1])(state.env.s)),
            train_return=state.last_return,
            nonfinite_updates=state.nonfinite_updates,
            nonfinite_env_steps=state.nonfinite_env_steps,
            env_steps=state.env_steps,
            updates=state.updates,
            episodes=state.episodes,
        )
        return state, metrics

    # --- diagnostics, once per chunk ---------------------------------------------
    def latest_episodes(buffer: ReplayBuffer) -> Transition:
        """On-policy: the episode of every environment that the latest iteration collected
        (the buffer's last ``horizon`` rows); leaves ``[n_envs, T, …]``."""
        latest = (buffer.position - horizon + jnp.arange(horizon)) % rows
        return jax.tree.map(lambda x: jnp.swapaxes(x[latest], 0, 1), buffer.data)

    def critic_explained_variance(state: TrainState, hp, key, episodes):
        """:func:`critics.explained_variance` of the online critic's ``V(s)`` (``Q(s, a)``)
        against returns ``G`` (rewards scaled by ``hp.reward_scale``), unweighted: on
        replay, ``G`` is the critic's own TD target on a fresh batch (:func:`td_targets`:
        a bootstrapped return, n-step with ``critic_n_step`` > 1); on the latest episodes,
        the discounted Monte-Carlo return-to-go (truncated at the horizon)."""
        if on_policy:
            batch = rollout.per_step(episodes)
            returns = jax.vmap(lambda r: estimators.returns_to_go(r, hp.gamma))(
                hp.reward_scale * episodes.r
            ).reshape(-1)
        else:
            batch, _, returns = td_targets(state, hp, *jax.random.split(key), None)
        return critics.explained_variance(returns, critic_values(state.critic, batch))

    def model_jacobian_errors(state: TrainState, key, batch: Transition):
        """:func:`jacobian_errors` of the learned model against the simulator on the first
        ``JACOBIAN_BATCH`` transitions of ``batch``, along ``u = ∇_{s'} V(s', t + 1)`` of the
        online critic (the direction SVG(1) takes), or, without a ``V`` critic, a random
        unit direction per transition (drawn from ``key``)."""
        batch = jax.tree.map(lambda x: x[:JACOBIAN_BATCH], batch)
        if algorithm.critic == "v":
            direction = jax.vmap(jax.grad(state.critic))(batch.s_next, batch.t + 1)
        else:
            direction = jax.random.normal(key, batch.s_next.shape, batch.s_next.dtype)
            direction /= jnp.linalg.norm(direction, axis=-1, keepdims=True)
        return jacobian_errors(
            make_dynamics("learned", env, state.model),
            make_dynamics("simulator", env),
            batch.s,
            batch.a,
            batch.s_next,
            batch.noise,
            direction,
        )

    def learning_metrics(state: TrainState, hp):
        """Diagnostics at the end of a chunk, each on one fresh batch (README, "Metrics"):
        the critic's explained variance, the model's one-step and Jacobian errors (the
        latter on at most ``JACOBIAN_BATCH`` of the same transitions), and the algorithm's
        own (:meth:`Algorithm.learning_metrics`). They draw on a key folded from the
        state's, which they do not advance: training is the same with or without them."""
        key_critic, key_model, key_algorithm = jax.random.split(
            jax.random.fold_in(state.key, DIAGNOSTICS_SALT), 3
        )
        episodes = latest_episodes(state.buffer) if on_policy else None
        metrics = {}
        if algorithm.critic is not None:
            metrics["critic_explained_variance"] = critic_explained_variance(
                state, hp, key_critic, episodes
            )
        if needs_model:
            batch = replay.sample(state.buffer, key_model, config.batch_size)
            metrics |= one_step_errors(state.model, batch.s, batch.a, batch.s_next)
            metrics |= model_jacobian_errors(state, jax.random.fold_in(key_model, 1), batch)
        inputs = policy_inputs(state, hp, episodes)
        return metrics | algorithm.learning_metrics(state.policy, inputs, key=key_algorithm)

    def iterate(state: TrainState, hp: Hyperparams):
        """``config.iterations / config.chunks`` iterations; metrics averaged over them
        (counters: their value at the end of the chunk)."""
        state, per_iteration = jax.lax.scan(
            lambda s, _: iteration(s, hp), state, None, length=iterations_per_chunk
        )
        metrics = {
            name: (values[-1] if name in COUNTERS else jnp.nanmean(values))
            for name, values in per_iteration.items()
        }
        return state, metrics

    def chunk(state: TrainState, hp: Hyperparams):
        """:func:`iterate`, and the diagnostics of :func:`learning_metrics` at its end."""
        state, metrics = iterate(state, hp)
        return state, metrics | learning_metrics(state, hp)

    def evaluate(state: TrainState, key: PRNGKeyArray):
        """``eval_episodes`` episodes with the mean action: mean return, success rate, and
        how many diverged. As in training, a diverged step (a non-finite state or reward,
        or a state beyond the task's ``max_state_abs``) ends its episode: the return
        counts the rewards before it, and the episode is not a success."""
        data = rollout.episodes(env, state.policy, key, config.eval_episodes, deterministic=True)
        bad = env.diverged(data.s_next, data.r)
        before = jnp.cumsum(bad, axis=1) == 0  # the steps before the first bad one
        ended = bad.any(axis=1)
        success = jax.vmap(env.success)(data.s_next[:, -1]) & ~ended
        return dict(
            eval_return=jnp.where(before, data.r, 0.0).sum(1).mean(),
            eval_success=success.mean(),
            eval_diverged=ended.sum(),
        )

    def train(key: PRNGKeyArray, hp: Hyperparams):
        """The whole run: ``(final state, metrics with a leading axis of chunks)``."""
        state = init(key, hp)
        return jax.lax.scan(lambda s, _: chunk(s, hp), state, None, length=config.chunks)

    return Train(
        init=init,
        chunk=chunk,
        evaluate=evaluate,
        train=train,
        config=config,
        iterate=iterate,
        diagnostics=learning_metrics,
    )


def parameters(state: TrainState) -> dict[str, object]:
    """The learned parameters of a state by part (``policy``, ``critic``, ``model``);
    a part the algorithm lacks is ``None``. The runner checks these are finite."""
    return dict(policy=state.policy, critic=state.critic, model=state.model)


def _count(state: TrainState, bad) -> TrainState:
    return eqx.tree_at(
        lambda s: s.nonfinite_updates, state, state.nonfinite_updates + bad.astype(jnp.int32)
    )
