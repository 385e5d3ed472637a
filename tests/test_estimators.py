"""The value-expansion estimator and its parts, pinned by exact identities
(docs/design.md, "What the tests pin down").

* Rebuilding a recorded stretch at the current parameters reproduces it, with
  either Jacobian source.
* SVG(∞) with simulator Jacobians on a deterministic rollout with fixed policy
  noise is back-propagation through time: it equals ``jax.grad`` of the return.
* SVG(0) tends to the deterministic policy gradient as σ → 0.
* With fresh actions, SVG(1) on any behaviour's data is the on-policy estimate.
* Importance weights are 1 on-policy and the density ratio off-policy;
  ``log_prob`` is a normalised density (with and without the squash).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from svgx import critics, estimators, rollout
from svgx.dynamics import LearnedDynamics, SimulatorDynamics, make_dynamics
from svgx.model import dynamics_model
from svgx.policy import mlp_policy


def make_policy(env, key, **kwargs):
    return mlp_policy(env.observe, env.observation_size, env.action_size, key=key, **kwargs)


def flat(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_array))
    return jnp.concatenate([jnp.ravel(x) for x in leaves])


@pytest.mark.parametrize("source", ["simulator", "learned"])
def test_rebuilding_a_recorded_stretch_reproduces_it(source):
    env = envs.make("cartpole", horizon=30)
    policy = make_policy(env, jax.random.key(0), init_std=0.3)
    data = rollout.episode(env, policy, jax.random.key(1))
    model = dynamics_model(
        env.observe, env.observation_size, env.state_size, env.action_size, key=jax.random.key(2)
    ).with_statistics(data.s, data.a, data.s_next)
    dynamics = make_dynamics(source, env, model)
    eta, xi = estimators.infer_noises(policy, dynamics, data)
    states, actions, total = jax.jit(estimators.rebuild, static_argnums=(2,))(
        policy, dynamics, env.reward, data.s[0], data.t, eta, xi, 1.0
    )
    np.testing.assert_allclose(actions, data.a, atol=2e-5)
    np.testing.assert_allclose(states[:-1], data.s, atol=1e-4)
    np.testing.assert_allclose(states[-1], data.s_next[-1], atol=1e-4)
    np.testing.assert_allclose(total, data.r.sum(), rtol=1e-4)


def test_dynamics_sources_share_one_interface():
    env = envs.make("cartpole")
    model = dynamics_model(env.observe, env.observation_size, 4, 1, key=jax.random.key(0))
    assert isinstance(make_dynamics("simulator", env), SimulatorDynamics)
    assert isinstance(make_dynamics("learned", env, model), LearnedDynamics)
    with pytest.raises(ValueError, match=r"unknown Jacobian source 'true'.*simulator, learned"):
        make_dynamics("true", env)
    with pytest.raises(ValueError, match="needs a dynamics model"):
        make_dynamics("learned", env)


# The default suite runs it on lqg; cartpole (MJX, 106 s cold) and hand (116 s) -m slow.
@pytest.mark.parametrize(
    "name",
    [
        "lqg",
        pytest.param("cartpole", marks=pytest.mark.slow),
        pytest.param("hand", marks=pytest.mark.slow),
    ],
)
def test_svg_inf_with_simulator_jacobians_is_backpropagation_through_time(name):
    """Deterministic environment, fixed policy noise: SVG(∞) = ∇θ of the rollout return."""
    with jax.enable_x64(True):
        env = envs.make(name, horizon=40, noise_scale=0.0)
        policy = make_policy(env, jax.random.key(0), init_std=0.3)
        policy = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, policy)
        s_0 = env.reset(jax.random.key(1)).astype(jnp.float64)
        eta = 0.3 * jax.random.normal(
            jax.random.key(2), (env.horizon, env.action_size), jnp.float64
        )
        zero = jnp.zeros(env.noise_size, jnp.float64)
        ts = jnp.arange(env.horizon)

        def rollout_return(policy):  # (return, the rollout as data: s, a, r, s')
            def body(s, inputs):
                t, eta_t = inputs
                a = policy.action(s, eta_t)
                s_next = env.transition(s, a, zero)
                r = env.reward(s, a, t)
                return s_next, (s, a, r, s_next)

            data = jax.lax.scan(body, s_0, (ts, eta))[1]
            return data[2].sum(), jax.lax.stop_gradient(data)

        # One compiled program: the gradient of the return, and the same rollout recorded
        # as data, from which the estimator then estimates alone.
        bptt, (s, a, r, s_next) = eqx.filter_jit(eqx.filter_grad(rollout_return, has_aux=True))(
            policy
        )
        data = estimators.Transition(
            s=s,
            a=a,
            r=r,
            s_next=s_next,
            t=ts,
            done=ts == env.horizon - 1,
            log_prob=jax.vmap(policy.log_prob)(s, a),
            noise=jnp.zeros((env.horizon, env.noise_size)),
        )
        batch = jax.tree.map(lambda x: x[None], data)
        svg_inf, _ = jax.jit(
            lambda p: estimators.policy_gradient(
                estimators.svg_loss, p, SimulatorDynamics(env), env.reward, None, batch, gamma=1.0
            )
        )(policy)
        expected, got = flat(bptt), flat(svg_inf)
        assert jnp.linalg.norm(expected) > 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * jnp.abs(expected).max())


def test_svg0_tends_to_the_deterministic_policy_gradient():
    env = envs.make("cartpole")
    key_q, key_s, key_a = jax.random.split(jax.random.key(0), 3)
    q = critics.q_function(env.observe, env.observation_size, env.action_size, key=key_q)
    s = jax.vmap(env.reset)(jax.random.split(key_s, 64))
    t = jnp.zeros(64, jnp.int32)

    def dpg(policy):  # ∇θ Q(s, μθ(s)), the deterministic policy gradient
        return flat(
            eqx.filter_grad(
                lambda p: jnp.mean(jax.vmap(lambda s_i: q(s_i, p.mean_action(s_i), 0))(s))
            )(policy).net
        )

    errors = []
    for std in (1e-1, 1e-2, 1e-3):
        policy = make_policy(env, jax.random.key(1), init_std=std)
        a, _ = jax.vmap(lambda s_i, k, policy=policy: policy.sample(s_i, key=k))(
            s, jax.random.split(key_a, 64)
        )
        batch = estimators.Transition(
            s=s,
            a=a,
            r=jnp.zeros(64),
            s_next=s,
            t=t,
            done=jnp.zeros(64, bool),
            log_prob=jax.vmap(policy.log_prob)(s, a),
            noise=jnp.zeros((64, 0)),
        )
        g, _ = estimators.policy_gradient(estimators.svg0_loss, policy, q, batch)
        reference = dpg(policy)
        errors.append(float(jnp.linalg.norm(flat(g.net) - reference) / jnp.linalg.norm(reference)))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 2e-3, errors


def test_svg0_with_given_noises_is_q_at_the_policys_own_actions():
    """``eta`` given: ``−mean Q(s, π(s, η))`` with weight 1, whatever the recorded actions;
    and the same as inferring ``η`` from actions that ``η`` made, unweighted."""
    env = envs.make("cartpole")
    key_q, key_s, key_eta, key_p = jax.random.split(jax.random.key(2), 4)
    q = critics.q_function(env.observe, env.observation_size, env.action_size, key=key_q)
    policy = make_policy(env, key_p, init_std=0.5)
    s = jax.vmap(env.reset)(jax.random.split(key_s, 16))
    eta = jax.random.normal(key_eta, (16, env.action_size))
    own = jax.vmap(policy.action)(s, eta)

    def batch(a):
        return estimators.Transition(
            s=s,
            a=a,
            r=jnp.zeros(16),
            s_next=s,
            t=jnp.zeros(16, jnp.int32),
            done=jnp.zeros(16, bool),
            log_prob=jnp.zeros(16),
            noise=jnp.zeros((16, 0)),
        )

    def direct(policy):
        return -jnp.mean(jax.vmap(lambda s_i, e: q(s_i, policy.action(s_i, e), 0))(s, eta))

    other = jnp.zeros_like(own)  # recorded actions play no part with eta given
    loss, aux = estimators.svg0_loss(policy, q, batch(other), eta=eta)
    np.testing.assert_allclose(loss, direct(policy), rtol=1e-6)
    np.testing.assert_array_equal(aux["importance_weight"], 1.0)
    g, _ = estimators.policy_gradient(estimators.svg0_loss, policy, q, batch(other), eta=eta)
    expected = jax.tree.map(jnp.negative, eqx.filter_grad(direct)(policy))
    np.testing.assert_allclose(flat(g.net), flat(expected.net), rtol=1e-5, atol=1e-7)
    inferred, _ = estimators.policy_gradient(estimators.svg0_loss, policy, q, batch(own))
    np.testing.assert_allclose(flat(inferred.net), flat(g.net), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [None, 2.0])
def test_log_prob_is_a_normalised_density_and_infer_noise_inverts_action(scale):
    policy = mlp_policy(lambda s: s, 3, 1, key=jax.random.key(0), init_std=0.7, scale=scale)
    s = jnp.array([0.3, -0.2, 0.5])
    lo, hi = (-8.0, 8.0) if scale is None else (-scale + 1e-6, scale - 1e-6)
    grid = jnp.linspace(lo, hi, 200_001)
    density = jnp.exp(jax.vmap(lambda a: policy.log_prob(s, a[None]))(grid))
    assert jnp.trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)
    eta = jnp.array([0.8])
    np.testing.assert_allclose(policy.infer_noise(s, policy.action(s, eta)), eta, rtol=1e-4)


def test_importance_weights_are_one_on_policy_and_the_density_ratio_off_policy():
    env = envs.make("cartpole", horizon=20)
    old = make_policy(env, jax.random.key(0), init_std=0.5)
    new = make_policy(env, jax.random.key(1), init_std=0.4)
    data = rollout.episodes(env, old, jax.random.key(2), 4)
    flat_data = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), data)
    log_p_old = jax.vmap(old.log_prob)(flat_data.s, flat_data.a)
    on = critics.truncated_importance_weights(log_p_old, flat_data.log_prob, 5.0)
    np.testing.assert_allclose(on, 1.0, rtol=1e-5)
    log_p_new = jax.vmap(new.log_prob)(flat_data.s, flat_data.a)
    off = critics.truncated_importance_weights(log_p_new, flat_data.log_prob, 1e9)
    np.testing.assert_allclose(off, jnp.exp(log_p_new - log_p_old), rtol=1e-4)
    capped = critics.truncated_importance_weights(log_p_new, flat_data.log_prob, 1.5)
    assert capped.max() <= 1.5 + 1e-6 and jnp.all(
        capped == jnp.minimum(off, 1.5) + (capped - jnp.minimum(off, 1.5))
    )
    # Sequences: the product of the per-step ratios, then truncated.
    seq = critics.truncated_importance_weights(
        log_p_new.reshape(4, -1), log_p_old.reshape(4, -1), 1e30
    )
    np.testing.assert_allclose(
        seq, jnp.exp((log_p_new - log_p_old).reshape(4, -1).sum(1)), rtol=1e-3
    )


def test_model_is_one_vmapped_stack_and_its_noise_inverts_its_step():
    env = envs.make("swimmer3")
    model = dynamics_model(
        env.observe,
        env.observation_size,
        env.state_size,
        env.action_size,
        key=jax.random.key(0),
        hidden=5,
    )
    # One stack: every weight has a leading axis of size n_s, no Python list of modules.
    weights = [x for x in jax.tree.leaves(eqx.filter(model.nets, eqx.is_array))]
    assert all(w.shape[0] == env.state_size for w in weights)
    assert weights[0].shape == (env.state_size, 5, env.observation_size + env.action_size)
    s, a = env.reset(jax.random.key(1)), 0.3 * jnp.ones(env.action_size)
    xi = jax.random.normal(jax.random.key(2), (env.state_size,))
    np.testing.assert_allclose(model.infer_noise(s, a, model(s, a, xi)), xi, rtol=1e-4, atol=1e-4)
    # Sub-network i alone determines dimension i of the prediction.
    mean, _ = model.predict(s, a)
    bumped = eqx.tree_at(
        lambda m: m.nets.layers[-1].bias, model, model.nets.layers[-1].bias.at[3, 0].add(1.0)
    )
    changed = jnp.nonzero(bumped.predict(s, a)[0] - mean)[0]
    assert changed.tolist() == [3]


def test_fresh_actions_from_any_behaviour_are_the_on_policy_estimate():
    """``actions="fresh"``: the stretch is rebuilt with the current policy's own actions
    from the replayed state, so it needs no importance weight. On a deterministic task,
    the fresh-action SVG(1) on a far behaviour policy's transitions equals the paper's
    SVG(1) on on-policy transitions from the same states with the same noises (whose
    importance weights are 1); the paper's estimate on the behaviour's data differs."""
    env = envs.make("lqg", noise_scale=0.0, state_size=3, action_size=2)
    keys = jax.random.split(jax.random.key(0), 6)
    policy = make_policy(env, keys[0], init_std=0.3)
    behaviour = make_policy(env, keys[1], init_std=0.8)
    value = critics.value_function(env.observe, env.observation_size, key=keys[2])
    s = jax.vmap(env.reset)(jax.random.split(keys[3], 32))
    eta = jax.random.normal(keys[4], (32, env.action_size))
    zero = jnp.zeros(env.noise_size)

    def transitions(pol, eta):  # one-step stretches, leaves [32, 1, …]
        a = jax.vmap(pol.action)(s, eta)
        s_next = jax.vmap(lambda s, a: env.transition(s, a, zero))(s, a)
        return jax.tree.map(
            lambda x: x[:, None],
            estimators.Transition(
                s=s,
                a=a,
                r=jax.vmap(env.reward)(s, a, jnp.zeros(32, jnp.int32)),
                s_next=s_next,
                t=jnp.zeros(32, jnp.int32),
                done=jnp.zeros(32, bool),
                log_prob=jax.vmap(pol.log_prob)(s, a),
                noise=jnp.zeros((32, env.noise_size)),
            ),
        )

    on = transitions(policy, eta)
    off = transitions(behaviour, jax.random.normal(keys[5], eta.shape))
    gradient = jax.jit(
        lambda batch, truncation, eta: flat(
            estimators.policy_gradient(
                estimators.svg_loss,
                policy,
                SimulatorDynamics(env),
                env.reward,
                value,
                batch,
                gamma=0.99,
                truncation=truncation,
                eta=eta,
            )[0]
        ),
        static_argnums=1,
    )
    paper_on_policy = gradient(on, 5.0, None)
    fresh = gradient(off, None, eta[:, None])
    assert jnp.linalg.norm(paper_on_policy) > 0
    np.testing.assert_allclose(
        fresh, paper_on_policy, rtol=1e-4, atol=1e-4 * jnp.abs(paper_on_policy).max()
    )
    paper_off_policy = gradient(off, 5.0, None)
    distance = jnp.linalg.norm(paper_off_policy - paper_on_policy)
    assert distance > 0.1 * jnp.linalg.norm(paper_on_policy)
