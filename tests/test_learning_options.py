"""The options that make svg1_er learn cart-pole, tested for what they compute.

* ``Hyperparams.entropy_coef``: the re-parameterised entropy of the squashed action
  (:meth:`GaussianPolicy.entropy_sample`) against the log-density computed the other
  way (un-squashing ``a``), and its gradient on a known Gaussian.
* ``Config.critic_n_step``: n-step runs from replay stop at the write position and at
  episode ends, and the targets of a hand-worked reward sequence.
* Both run through the training loop, and the defaults leave the paper's algorithm.
* The planner with a time-aware critic counts no reward past the horizon.
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small import TINY_LQG

import envs
from svgx import critics, estimators, replay, rollout, runner, tuned
from svgx.algorithms import Planner, PolicyInputs
from svgx.config import Config, Hyperparams
from svgx.dynamics import SimulatorDynamics
from svgx.policy import linear_policy, mlp_policy
from svgx.replay import Transition

# --- the entropy bonus ------------------------------------------------------------------


def test_entropy_sample_of_an_unsquashed_gaussian_and_its_gradient():
    """Unsquashed, −log p(μ + ση) = Σ_i (η_i²/2 + log σ_i + log(2π)/2): with σ = (0.5, 0.5)
    and η = (1, −2): 5/2 + 2 log 0.5 + log(2π). It does not depend on μ (η is held
    fixed and the density is the standard normal's at η), so its gradient in the
    mean's parameters is exactly 0."""
    with jax.enable_x64(True):
        policy = linear_policy(3, 2, init_std=0.5, learn_std=True)
        s, eta = jnp.array([0.3, -1.0, 2.0]), jnp.array([1.0, -2.0])
        assert np.allclose(policy.distribution(s)[1], 0.5)
        np.testing.assert_allclose(
            policy.entropy_sample(s, eta), 2.5 + 2 * np.log(0.5) + np.log(2 * np.pi), rtol=1e-6
        )
        grads = eqx.filter_grad(lambda p: p.entropy_sample(s, eta))(policy)
        mean_grads = jax.tree.leaves(grads.net)  # the linear policy's net is its mean
        assert mean_grads and all(np.all(np.asarray(g) == 0) for g in mean_grads)


def test_entropy_sample_of_the_squashed_action_equals_minus_log_prob_of_that_action():
    """Two ways to the same number: the change of variables at u = μ + ση, and
    ``log_prob`` of a = scale·tanh(u), which un-squashes a first (float64)."""
    with jax.enable_x64(True):
        policy = mlp_policy(
            lambda s: s, 3, 2, key=jax.random.key(0), hidden=(8, 8), init_std=0.7, scale=2.0
        )
        policy = jax.tree.map(
            lambda x: (
                x.astype(jnp.float64)
                if jnp.issubdtype(getattr(x, "dtype", None), jnp.floating)
                else x
            ),
            policy,
        )
        keys = jax.random.split(jax.random.key(1), 16)
        states = jax.random.normal(keys[0], (16, 3), jnp.float64)
        etas = jax.random.normal(keys[1], (16, 2), jnp.float64)
        mean, std = jax.vmap(policy.distribution)(states)
        actions = 2.0 * jnp.tanh(mean + std * etas)
        by_reparameterisation = jax.vmap(policy.entropy_sample)(states, etas)
        by_density = -jax.vmap(policy.log_prob)(states, actions)
        np.testing.assert_allclose(by_reparameterisation, by_density, rtol=1e-9)


def test_the_entropy_bonus_of_a_squashed_policy_is_bounded_in_sigma():
    """Σ log σ grows without bound; the squashed action's entropy, as
    ``entropy_sample`` estimates it, peaks and falls once tanh saturates (a very wide
    σ puts a at ±scale), so the bonus cannot run σ away. Same mean network, σ varied."""
    etas = jax.random.normal(jax.random.key(1), (4096, 1))
    s = jnp.zeros(2)

    def entropy(init_std):
        policy = mlp_policy(
            lambda s: s, 2, 1, key=jax.random.key(0), hidden=(4, 4), init_std=init_std, scale=1.0
        )
        return float(jnp.mean(jax.vmap(lambda eta: policy.entropy_sample(s, eta))(etas)))

    narrow, middle, wide = entropy(0.3), entropy(1.0), entropy(7.0)
    assert middle > narrow and middle > wide


# --- n-step targets ---------------------------------------------------------------------


def run_of(rewards, dones, t0=0):
    """One run of len(rewards) steps: s = (t,), s_next = (t + 1,)."""
    n = len(rewards)
    t = np.arange(t0, t0 + n, dtype=np.int32)
    return Transition(
        s=jnp.asarray(t[:, None], jnp.float32),
        a=jnp.zeros((n, 1)),
        r=jnp.asarray(rewards, jnp.float32),
        s_next=jnp.asarray(t[:, None] + 1, jnp.float32),
        t=jnp.asarray(t),
        done=jnp.asarray(dones),
        log_prob=jnp.zeros(n),
        noise=jnp.zeros((n, 1)),
    )


def test_n_step_targets_of_a_hand_worked_reward_sequence():
    # Run 1: r = (1, 2, 4), all inside, γ = 1/2: 1 + 2/2 + 4/4 = 3; bootstrap s_3, t = 3, γ³ = 1/8.
    # Run 2: r = (1, 2, 4), the episode ends at step 1 (inside = T, T, F): 1 + 1 = 2;
    #        bootstrap from step 1's s_next = (7,) at t = 7, discount γ² = 1/4.
    one, two = (
        run_of([1.0, 2.0, 4.0], [False] * 3),
        run_of([1.0, 2.0, 4.0], [False, True, False], t0=5),
    )
    runs = jax.tree.map(lambda a, b: jnp.stack([a, b]), one, two)
    inside = jnp.array([[True, True, True], [True, True, False]])
    reward_sum, s_k, t_k, discount = critics.n_step_target(runs, inside, 0.5)
    np.testing.assert_array_equal(reward_sum, [3.0, 2.0])
    np.testing.assert_array_equal(s_k[:, 0], [3.0, 7.0])
    np.testing.assert_array_equal(t_k, [3, 7])
    np.testing.assert_array_equal(discount, [0.125, 0.25])


def test_value_td_loss_with_an_n_step_target():
    # V(s, t) = 2 s (no time input), target V' the same: run 1 of the test above,
    # y = 3 + (1/8)·V'(s_3 = 3) = 3 + 6/8 = 3.75; V(s_0 = 0) = 0; loss = (0 − 3.75)²/2.
    value = critics.ValueFunction(lambda x: 2.0 * x, lambda s: s, None)
    loss = critics.value_td_loss(
        value,
        value,
        jnp.zeros((1, 1)),
        jnp.zeros(1, jnp.int32),
        jnp.array([3.0]),
        jnp.array([[3.0]]),
        jnp.array([0.125]),
        jnp.ones(1),
        jnp.array([3], jnp.int32),
    )
    np.testing.assert_allclose(loss, 0.5 * 3.75**2, rtol=1e-6)


def test_sample_n_step_stops_at_episode_end_and_write_position():
    """Runs are consecutive steps of one environment; a step is inside iff it is
    filled and no earlier step of the run ended its episode."""
    capacity, n_envs, n, steps = 6, 2, 3, 8
    done_at = {4: [True, False]}
    buffer = replay.init(capacity, row(0, n_envs))
    for k in range(steps):  # wraps: the buffer holds steps 2 .. 7
        buffer = replay.add(buffer, row(k, n_envs, done=done_at.get(k)))
    runs, inside = replay.sample_n_step(buffer, jax.random.key(0), 256, n)
    ident, inside = np.asarray(runs.r), np.asarray(inside)
    step, env = (ident // 100).astype(int), (ident % 100).astype(int)
    assert np.all(env == env[:, :1])
    assert np.all(inside[:, 0]) and set(step[:, 0]) == set(range(2, steps))
    for k, e, mask in zip(step[:, 0], env[:, 0], inside, strict=True):
        ended = [done_at.get(j, [False] * n_envs)[e] for j in range(k, k + n)]
        expected = [k + i < steps and not any(ended[:i]) for i in range(n)]
        assert mask.tolist() == expected
    assert np.all(np.where(inside, step == step[:, :1] + np.arange(n), True))


def row(step, n_envs, *, done=None):
    ident = (100 * step + np.arange(n_envs)).astype(np.float32)
    return Transition(
        s=jnp.asarray(ident)[:, None],
        a=jnp.zeros((n_envs, 1)),
        r=jnp.asarray(ident),
        s_next=jnp.asarray(ident)[:, None],
        t=jnp.full(n_envs, step, jnp.int32),
        done=jnp.asarray(np.zeros(n_envs, bool) if done is None else done),
        log_prob=jnp.zeros(n_envs),
        noise=jnp.zeros((n_envs, 1)),
    )


# --- through the training loop ------------------------------------------------------------

LQG = dict(iterations=4, chunks=2, **TINY_LQG)


def test_n_step_targets_and_the_entropy_bonus_train_and_report_sigma():
    config = Config(algo="svg1_er", critic_n_step=3, **LQG)
    result = runner.run(config, Hyperparams(entropy_coef=0.1), seeds=2, progress=lambda line: None)
    last = result.metrics[-1]
    assert np.isfinite(last["value_loss"]).all() and last["nonfinite_updates"].sum() == 0
    assert np.all(last["policy_std"] > 0)


def test_n_step_targets_need_a_replay_algorithm_with_v():
    with pytest.raises(ValueError, match="critic_n_step=3 with algo='svg0_er': n-step targets"):
        Config(algo="svg0_er", critic_n_step=3)
    with pytest.raises(ValueError, match="critic_n_step=0: must be an integer >= 1"):
        Config(critic_n_step=0)
    with pytest.raises(ValueError, match=r"entropy_coef=-0\.1: must be >= 0"):
        Hyperparams(entropy_coef=-0.1).check()


def test_simulated_return_is_the_policys_own_n_step_return_and_stops_at_the_horizon():
    """``targets="dynamics"``: on a deterministic task with the simulator, the target's
    reward sum, last state and discount are those of the policy's own actions from the
    replayed state (here a policy that samples its mean action, so that rollout.episode
    records the same steps), and a start 2 steps before the horizon takes 2 steps, not 5."""

    class MeanActions(eqx.Module):
        policy: object

        def sample(self, s, *, key):
            return self.policy.mean_action(s), None

    with jax.enable_x64(True):
        env = envs.make("lqg", horizon=10, noise_scale=0.0)
        policy = linear_policy(env.state_size, env.action_size, K=jnp.array([[-0.3, -0.5]]))
        s = env.reset(jax.random.key(0)).astype(jnp.float64)
        dynamics = SimulatorDynamics(env)

        def simulated(t):
            return estimators.simulated_return(
                MeanActions(policy),
                dynamics,
                env.reward,
                s,
                jnp.asarray(t),
                key=jax.random.key(1),
                steps=5,
                gamma=0.9,
                horizon=env.horizon,
            )

        for t_0, k in ((3, 5), (8, 2)):
            data = rollout.episode(
                env, policy, jax.random.key(2), steps=k, s_0=s, t_0=t_0, deterministic=True
            )
            total, s_k, t_k, discount = simulated(t_0)
            np.testing.assert_allclose(total, np.sum(0.9 ** np.arange(k) * data.r), rtol=1e-7)
            np.testing.assert_allclose(s_k, data.s_next[-1], rtol=1e-7, atol=1e-12)
            assert int(t_k) == t_0 + k and np.isclose(discount, 0.9**k)


def test_the_planner_with_a_time_aware_critic_earns_nothing_past_the_horizon():
    """The planner's surrogate from ``t_0`` is the deterministic rollout's discounted
    reward sum plus ``γ^k V``. With a critic that knows time (``V = 0`` at ``T``), a
    start 2 steps before the horizon earns the 2 rewards left in the episode, not 5;
    a start far from it earns 5 rewards and ``V``'s bootstrap."""

    class MeanActions(eqx.Module):
        policy: object

        def action(self, s, eta):
            return self.policy.mean_action(s)

        def mean_action(self, s):
            return self.policy.mean_action(s)

    with jax.enable_x64(True):
        env = envs.make("lqg", horizon=10, noise_scale=0.0)
        policy = linear_policy(env.state_size, env.action_size, K=jnp.array([[-0.3, -0.5]]))
        s = env.reset(jax.random.key(0)).astype(jnp.float64)
        value = critics.value_function(
            env.observe, env.observation_size, key=jax.random.key(3), horizon=env.horizon
        )
        value = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, value)
        planned = jax.jit(
            lambda t_0: estimators.planner_loss(
                MeanActions(policy),
                SimulatorDynamics(env),
                env.reward,
                value,
                s[None],
                t_0[None],
                key=jax.random.key(1),
                steps=5,
                gamma=0.9,
                horizon=env.horizon,
            )
        )
        for t_0, k in ((3, 5), (8, 2)):
            loss, aux = planned(jnp.asarray(t_0))
            data = rollout.episode(
                env, policy, jax.random.key(2), steps=5, s_0=s, t_0=t_0, deterministic=True
            )
            expected = np.sum(0.9 ** np.arange(k) * data.r[:k])
            if k == 5:
                expected += 0.9**5 * value(data.s_next[-1], t_0 + 5)
            np.testing.assert_allclose(aux["surrogate"][0], expected, rtol=1e-7)
            np.testing.assert_allclose(loss, -expected, rtol=1e-7)

        # The algorithm hands its critic's horizon to the estimator: the replayed start
        # 2 steps before the horizon earns 2 rewards.
        step = Transition(
            s=s[None],
            a=jnp.zeros((1, env.action_size)),
            r=jnp.zeros(1),
            s_next=s[None],
            t=jnp.array([8]),
            done=jnp.zeros(1, bool),
            log_prob=jnp.zeros(1),
            noise=jnp.zeros((1, env.noise_size)),
        )
        inputs = PolicyInputs(
            critic=value,
            dynamics=SimulatorDynamics(env),
            reward=env.reward,
            episodes=None,
            buffer=replay.add(replay.init(4, step), step),
            batch_size=3,
            hp=Hyperparams(gamma=0.9),
            extra=None,
        )
        loss, _ = Planner(planner_horizon=5).policy_loss(inputs, key=jax.random.key(4))
        np.testing.assert_allclose(jax.jit(loss)(MeanActions(policy))[0], -expected, rtol=1e-7)


def test_fresh_actions_and_dynamics_targets_train_and_the_flags_name_their_values():
    """Both options through the loop (svgk_er with a learned model; the estimator's
    identity with fresh actions is tests/test_estimators.py's). Its policy step reports
    no importance weights, as it uses none (tests/test_train.py checks that the paper's
    setting reports them)."""
    options = {"k": 2, "actions": "fresh", "targets": "dynamics", "transition_clip": 2.0}
    cases = (("svgk_er", options, "learned"),)
    for algo, options, jacobians in cases:
        config = Config(
            algo=algo, algo_options=options, critic_n_step=3, jacobians=jacobians, **LQG
        )
        result = runner.run(config, Hyperparams(), seeds=2, progress=lambda line: None)
        last = result.metrics[-1]
        assert np.isfinite(last["policy_loss"]).all() and np.isfinite(last["value_loss"]).all()
        assert np.isfinite(last["critic_explained_variance"]).all()
        assert last["nonfinite_updates"].sum() == 0
        assert "importance_weight_mean" not in last
        assert (0 <= last["transition_clip_fraction"]).all()
        assert (last["transition_clip_fraction"] < 0.5).all()  # at twice the median
    with pytest.raises(ValueError, match="actions='new': must be one of replayed, fresh"):
        Config(algo="svg1_er", algo_options={"actions": "new"})
    with pytest.raises(ValueError, match="targets='model': must be one of replayed, dynamics"):
        Config(algo="svg1_er", algo_options={"targets": "model"})
    spec = resolve("--env", "lqg", "--algo", "svgk_er", "--actions", "fresh", "--k", "3")
    assert spec.config.algo_options == {"actions": "fresh", "k": 3}


def test_svg0_er_with_fresh_actions_weighs_nothing_and_trains():
    """svg0_er's actions="fresh": the critic's TD regression and the policy step are
    unweighted (SAC's actor and critic at a fixed temperature); the paper's "replayed"
    keeps the truncated importance weights in both."""
    from svgx.algorithms.svg import SVG0Replay

    env, key = envs.make("lqg"), jax.random.key(0)
    policy = mlp_policy(env.observe, env.observation_size, env.action_size, key=key, init_std=0.5)
    s = jax.vmap(env.reset)(jax.random.split(key, 8))
    a = jnp.full((8, env.action_size), 2.0)  # far from the policy's mean: small weights
    batch = Transition(
        s=s,
        a=a,
        r=jnp.zeros(8),
        s_next=s,
        t=jnp.zeros(8, jnp.int32),
        done=jnp.zeros(8, bool),
        log_prob=jnp.zeros(8),
        noise=jnp.zeros((8, env.noise_size)),
    )
    hp = Hyperparams()
    np.testing.assert_array_equal(SVG0Replay(actions="fresh").critic_weights(policy, batch, hp), 1)
    assert (SVG0Replay().critic_weights(policy, batch, hp) < 1).all()
    config = Config(algo="svg0_er", algo_options={"actions": "fresh"}, **LQG)
    result = runner.run(config, Hyperparams(), seeds=2, progress=lambda line: None)
    last = result.metrics[-1]
    assert np.isfinite(last["policy_loss"]).all() and np.isfinite(last["value_loss"]).all()
    assert last["nonfinite_updates"].sum() == 0
    assert "importance_weight_mean" not in last
    with pytest.raises(ValueError, match="actions='new': must be one of replayed, fresh"):
        Config(algo="svg0_er", algo_options={"actions": "new"})
    spec = resolve("--env", "lqg", "--algo", "svg0_er", "--actions", "fresh")
    assert spec.config.algo_options == {"actions": "fresh"}


# --- tuned settings per task, used by svgx train ----------------------------------------


def resolve(*argv):
    import tyro

    from svgx import cli

    return cli.train_spec(tyro.cli(cli.train_args(), args=["--out", "unused", *argv]))


def test_svgx_train_resolves_the_tuned_settings_and_flags_override_them(capsys):
    expected = tuned.settings("cartpole", "svg1_er")
    assert expected  # the entry this test is about exists
    spec = resolve("--env", "cartpole", "--algo", "svg1_er")
    for name, value in expected.items():
        field = spec.config if hasattr(spec.config, name) else spec.hparams
        assert np.isclose(float(getattr(field, name)), value), name
    assert "tuned settings for svg1_er on cartpole" in capsys.readouterr().err
    # config.json records the resolved values
    recorded = json.loads(spec.to_json())
    assert recorded["config"]["critic_n_step"] == expected["critic_n_step"]
    assert np.isclose(recorded["hparams"]["entropy_coef"], expected["entropy_coef"])
    # an explicit flag wins, the rest stay tuned
    spec = resolve(
        "--env", "cartpole", "--algo", "svg1_er", "--tau", "0.01", "--critic-n-step", "1"
    )
    assert np.isclose(float(spec.hparams.tau), 0.01) and spec.config.critic_n_step == 1
    assert np.isclose(float(spec.hparams.entropy_coef), expected["entropy_coef"])
    # an entry may set the algorithm's own options; a flag overrides one, not the others
    spec = resolve("--env", "reacher4", "--algo", "svg1_er")
    assert spec.config.algo_options == {"actions": "fresh", "targets": "dynamics"}
    spec = resolve("--env", "reacher4", "--algo", "svg1_er", "--targets", "replayed")
    assert spec.config.algo_options == {"actions": "fresh", "targets": "replayed"}
    # a pair without an entry gets the class defaults (the paper's algorithm)
    spec = resolve("--env", "cartpole", "--algo", "svg0_er")
    assert spec.config.critic_n_step == 1
    assert float(spec.hparams.entropy_coef) == 0.0 and float(spec.hparams.tau) == Hyperparams().tau


@pytest.mark.parametrize(("env", "algo"), sorted(tuned.TUNED))
def test_every_tuned_entry_resolves_to_a_valid_training_run(env, algo):
    """Each entry names a registered task and algorithm and only fields or options that
    ``svgx train`` accepts for them (``train_spec`` validates the resolved run)."""
    spec = resolve("--env", env, "--algo", algo)
    assert (spec.config.env, spec.config.algo) == (env, algo)
    for name, value in tuned.settings(env, algo).items():
        if name in spec.config.algo_options:
            assert spec.config.algo_options[name] == value, name
        else:
            field = spec.config if hasattr(spec.config, name) else spec.hparams
            assert np.isclose(float(getattr(field, name)), value), name


# --- per-stretch clipping of the policy gradient ------------------------------------------


def test_transition_clip_averages_each_stretchs_gradient_clipped_at_a_multiple_of_the_median():
    """svg1_er's gradient with ``transition_clip=ρ`` is the mean over the batch of each
    transition's own gradient ``∇θ (−w_i L_i)`` (each taken alone here, by its own
    reverse pass), scaled down to ``ρ · median`` norm where longer; with a bound no
    stretch reaches, it is the plain gradient. Importance weights (the paper's replayed
    actions) stay in each transition's term; fresh actions (no weights, the noises
    given) take the same path through ``svg_loss``."""
    from svgx.algorithms import SVG1Replay

    actions = "replayed"

    with jax.enable_x64(True):
        env = envs.make("lqg", noise_scale=0.0)
        policy = linear_policy(
            env.state_size, env.action_size, K=jnp.array([[-0.3, -0.5]]), learn_std=True
        )
        policy = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, policy)
        value = critics.value_function(env.observe, env.observation_size, key=jax.random.key(3))
        value = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, value)
        n_rows, n_envs, batch = 8, 2, 16
        keys = jax.random.split(jax.random.key(5), 4)
        shape = (n_rows, n_envs)
        s = 2.0 * jax.random.normal(keys[0], (*shape, env.state_size), jnp.float64)
        rows = Transition(
            s=s,
            a=jax.random.normal(keys[1], (*shape, env.action_size), jnp.float64),
            r=jnp.zeros(shape),
            s_next=s,
            t=jnp.zeros(shape, jnp.int32),
            done=jnp.zeros(shape, bool),
            log_prob=-1.0 + 0.5 * jax.random.normal(keys[2], shape, jnp.float64),
            noise=jnp.zeros((*shape, env.noise_size)),
        )
        buffer = replay.add_rows(replay.init(n_rows, jax.tree.map(lambda x: x[0], rows)), rows)
        inputs = PolicyInputs(
            critic=value,
            dynamics=SimulatorDynamics(env),
            reward=env.reward,
            episodes=None,
            buffer=buffer,
            batch_size=batch,
            hp=Hyperparams(gamma=0.9),
            extra=None,
        )
        key = jax.random.key(7)

        def gradient(algorithm):
            loss, ready = algorithm.policy_loss(inputs, key=key)
            assert bool(ready)
            (_, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)(policy)
            return jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_array))[0], aux

        plain_loss, _ = SVG1Replay(actions=actions).policy_loss(inputs, key=key)

        def term(p, i):  # transition i's own term of the plain loss
            _, aux = plain_loss(p)
            return -aux["importance_weight"][i] * aux["surrogate"][i]

        term_gradient = jax.jit(
            lambda i: jax.flatten_util.ravel_pytree(
                eqx.filter(eqx.filter_grad(term)(policy, i), eqx.is_array)
            )[0]
        )
        per_transition = [term_gradient(i) for i in range(batch)]  # each alone
        per_transition = np.stack(per_transition)
        norms = np.linalg.norm(per_transition, axis=1)
        plain, _ = gradient(SVG1Replay(actions=actions))
        np.testing.assert_allclose(plain, per_transition.mean(0), rtol=1e-10, atol=1e-12)
        _, aux = plain_loss(policy)
        assert np.ptp(aux["importance_weight"]) > 0.1  # the weights are not all one

        for multiple in (0.5, 1.0, 2.0):
            bound = multiple * np.median(norms)
            scale = np.minimum(1.0, bound / norms)
            assert 0 < (scale < 1).sum() < batch  # some stretches clipped, some not
            clipped, aux = gradient(SVG1Replay(actions=actions, transition_clip=multiple))
            expected = (per_transition * scale[:, None]).mean(0)
            np.testing.assert_allclose(clipped, expected, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(aux["clip_scale"], scale, rtol=1e-9)
            metrics = SVG1Replay(actions=actions, transition_clip=multiple).policy_metrics(aux)
            assert metrics["transition_clip_fraction"] == pytest.approx((scale < 1).mean())
        unreached = 1.01 * norms.max() / np.median(norms)
        unclipped, _ = gradient(SVG1Replay(actions=actions, transition_clip=unreached))
        np.testing.assert_allclose(unclipped, plain, rtol=1e-12)


def test_transition_clip_is_a_flag_of_the_value_expansions_and_refuses_negatives():
    spec = resolve("--env", "lqg", "--algo", "svg1_er", "--transition-clip", "3")
    assert spec.config.algo_options == {"transition_clip": 3.0}
    for algo in ("svg_inf", "svg1", "svgk_er"):
        assert (
            "transition_clip" in resolve("--env", "lqg", "--algo", algo).config.algorithm.__dict__
        )
    with pytest.raises(ValueError, match=r"transition_clip=-1.0: must be a finite number >= 0"):
        Config(algo="svgk_er", algo_options={"transition_clip": -1.0})
