"""The smallest useful training setup, shared by tests that train for a few chunks:
``lqg`` cut to 10 steps with a linear-Gaussian policy, 2 environments, tiny critic.
Compiles in seconds; tests add the fields they vary (``iterations``, ``chunks``, …)."""

TINY_LQG = dict(
    env="lqg",
    env_options=dict(horizon=10),
    linear_policy=True,
    squash=False,
    n_envs=2,
    batch_size=16,
    critic_hidden=(16, 16),
    eval_episodes=2,
)

# The same as flags of `svgx train`.
TINY_LQG_FLAGS = [
    *("--env", "lqg", "--env-options", "horizon", "10", "--linear-policy", "--no-squash"),
    *("--n-envs", "2", "--batch-size", "16", "--critic-hidden", "16", "16"),
    *("--eval-episodes", "2"),
]
