"""Settings that learn, per task and algorithm: what ``svgx train`` uses by default.

``svgx train --env cartpole --algo svg1_er`` with no other flag resolves each
field as: the flag, if given; else this table's value for ``(env, algo)``; else
the class default of :class:`~svgx.config.Config` or
:class:`~svgx.config.Hyperparams` (the paper's algorithm). ``config.json``
records the resolved values. The Python API (``Config(...)``, ``Hyperparams(...)``)
does not read the table; :func:`settings` gives it to whoever wants it.

Where each entry comes from (measured; details in experiments/results/learning.md):

* ``cartpole``, ``svg1_er``: with the class defaults σ collapsed (0.5 → 0.029
  in 40k steps), the replay never held the pole above horizontal, and success
  stayed 0% (2 seeds, 40k steps). With the squashed-action entropy bonus
  (α = 0.03), 5-step targets for ``V``, τ = 0.05 and a policy step size of
  1e-3, 5 of 5 seeds of the benchmark (experiments/learning/cartpole.toml)
  ended at 100% success after 100k environment steps per seed; without the
  bonus 0 of 8, with 1-step targets 2 of 4. With learned Jacobians the model's
  step size 3e-3 (default 1e-3) took success from 3 of 5 seeds to 8 of 8
  (cartpole_learned.toml, cartpole_learned_confirm.toml); it changes nothing
  with simulator Jacobians.
* ``reacher4``, ``svg1_er``: with cart-pole's settings (the paper's importance-weighted
  policy step and V targets) 0% success at 100k and at most 25% at 160k: the policy
  leaves its replayed data within a few hundred updates (weights of transitions
  100–999 updates old: median e⁻⁴ to e⁻⁵), which starved V. With fresh actions and
  V's 5-step targets simulated through the Jacobian source's dynamics (no importance
  weights), entropy bonus 0.01, learned Jacobians: 70% success at 200k over 5 seeds
  (reacher4_expanded_learned.toml), 50% mean success at 180k; Brax SAC: 8%.
* ``reacher4``, ``svgk_er`` (k = 5): svg1_er's settings above: 97% (93%–100%) success
  at 200k on 256 episodes per seed, 5 seeds (reacher4_svgk_fresh.toml), against 58% for
  svg1_er with the same settings: SVG(1)'s policies stopped 5–9 cm short of the target.
* ``swimmer3``, ``svg1_er``: reacher4's settings, the only ones run past 100k: with
  learned Jacobians 25% and 50% success at 400k, the return still rising
  (swimmer3_long.toml, goal in the head's frame). At 100k they were no better than
  the paper's weighted step with cart-pole's settings (returns −351/−229 against
  −278/−220, 2 seeds each; swimmer3_expanded.toml, probe.toml). The issue's ≥ 50% is
  not met yet.
* ``swimmer5``, ``swimmer7``, ``reacher_moving``, ``gripper``, ``monoped``, ``walker``,
  ``cheetah_springs``, ``svg1_er``: reacher4's settings, learned Jacobians, 5 seeds ×
  200k (other_tasks.toml): the mean eval return rose on each (swimmer5 −408 → −247,
  swimmer7 −460 → −296, reacher_moving −43 → −33, gripper −272 → −240, monoped 145 →
  173, walker 62 → 206, cheetah_springs −81 → 208 with 43% success), and ended ahead
  of Brax PPO's at the same sizes on each. On swimmer5 and swimmer7 the paper's
  weighted step and targets with cart-pole's settings (entropy bonus 0.03) were
  behind over the run (mean return −363.6 against −279.9, p = 0.032, and −459.1
  against −350.8, p = 0.050; fig3_right_swimmer5.toml, fig4_swimmer7.toml; paper.md,
  claim 6); on the other five that variant was not run. The ``cheetah`` has no svg1_er
  entry: with these settings its return did not rise (22.5 → 19.6).
* ``cheetah``, ``svg0_er``: fresh actions (no importance weights in the policy step or
  in Q's regression: SAC's actor and one critic at α = 0.01), τ = 0.05, policy step
  1e-3, 5 seeds × 200k (cheetah_learned.toml): mean eval return over the run 58.5
  against 19.5 for svg1_er above, −60.8 for the paper's weighted svg0_er (p = 0.006)
  and 44.1 for Brax SAC (p = 0.64); success over the run 12% against SAC's 3% (p =
  0.002); the final policies 15% (7%–24%) on 256 episodes per seed.
* ``walker``, ``monoped``, ``cheetah_springs``, ``svg0_er``: the cheetah's settings
  above, 5 seeds × 200k (contact_svg0_fresh.toml): mean eval return over the run 288.6
  on the walker against 150.4 for svg1_er above (p = 0.022) and 40.3 for Brax SAC, and
  203.7 on the monoped against 164.6 and 168.2 (p < 0.001 each); the monoped's final
  policies 25% (5%–45%) on 256 episodes per seed, the walker's 12% (0%–28%). On
  ``cheetah_springs`` 56% (29%–82%) on 256 episodes against svg1_er's 43%, over the run
  258.3 against 93.0 (p = 0.016) and Brax SAC's 216.7 (p = 0.44).
* ``hand``, ``svg_inf``: the policy step size 1e-3 (class default 3e-4): 4 of 4 seeds
  at 100% success on the 1000-step hand within 2M steps (hand.toml). On the earlier
  task with unreachable targets both step sizes were run and 1e-3 came closer to the
  best possible return (−0.84 against −0.93; hand_probe.toml).
"""

from __future__ import annotations

# svg1_er without importance weights (fresh actions, V's targets through the dynamics),
# as it learned reacher4.
WITHOUT_WEIGHTS = dict(
    actions="fresh",
    targets="dynamics",
    critic_n_step=5,
    entropy_coef=0.01,
    tau=0.05,
    policy_lr=1e-3,
    model_lr=3e-3,
)

TUNED: dict[tuple[str, str], dict[str, int | float | str]] = {
    ("cartpole", "svg1_er"): dict(
        critic_n_step=5, entropy_coef=0.03, tau=0.05, policy_lr=1e-3, model_lr=3e-3
    ),
    ("reacher4", "svg1_er"): WITHOUT_WEIGHTS,
    ("reacher4", "svgk_er"): WITHOUT_WEIGHTS,  # k = 5, the class default
    ("swimmer3", "svg1_er"): WITHOUT_WEIGHTS,
    **{
        (env, "svg1_er"): WITHOUT_WEIGHTS
        for env in (
            "swimmer5",
            "swimmer7",
            "reacher_moving",
            "gripper",
            "monoped",
            "walker",
            "cheetah_springs",
        )
    },
    ("hand", "svg_inf"): dict(policy_lr=1e-3),
    **{
        (env, "svg0_er"): dict(actions="fresh", entropy_coef=0.01, tau=0.05, policy_lr=1e-3)
        for env in ("cheetah", "walker", "monoped", "cheetah_springs")
    },
}


def settings(env: str, algo: str) -> dict[str, int | float | str]:
    """The tuned fields of ``(env, algo)`` (a Config or Hyperparams field, or an option of
    the algorithm, -> value); {} if none."""
    return dict(TUNED.get((env, algo), {}))


def tunable_fields() -> set[str]:
    """Every field some entry sets (``svgx train`` leaves these unset: tuned, else default)."""
    return {name for entry in TUNED.values() for name in entry}
