"""How a reacher4 run's final policies miss: per member and per target corner, the
success rate and the fingertip's final distance from the target.

A policy that fails because it never learned to reach a corner ends far from it; one
that reaches every corner but stops short ends just outside ``success_distance``.
This tells the two apart, on the fresh episodes of ``experiments.final_success``.

    python -m experiments.reacher_misses runs/learning/reacher4_batch/g00-reacher4-svg1_er-learned
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.final_success import final_episodes, parse_arguments

# The corners in reacher4's order, as signs of (x, y).
CORNERS = ((1, 1), (-1, 1), (-1, -1), (1, -1))


def misses(directory: str, episodes: int, keys=None) -> dict[str, np.ndarray]:
    """Per member and corner ``[members, 4]``: ``episodes`` (how many targeted it),
    ``success`` (their rate), ``median_distance`` (of the final fingertip-target
    distance, m); and ``distance`` ``[members, episodes]``, each episode's final
    distance, with ``corner``, its corner's index, and ``succeeded``."""
    env, data = final_episodes(directory, episodes, keys)
    final = data.s_next[:, :, -1]

    def distance(s):
        return jnp.linalg.norm(env.fingertip(s) - env.target(s))

    per_episode = jax.vmap(jax.vmap(lambda s: (distance(s), env.target(s), env.success(s))))
    distances, targets, success = map(np.asarray, per_episode(final))
    signs = np.sign(targets)  # reacher4's targets sit at (±CORNER, ±CORNER)
    corner = np.argmax(np.all(signs[:, :, None, :] == np.array(CORNERS), axis=-1), axis=-1)
    out = dict(episodes=[], success=[], median_distance=[])
    for index in range(len(CORNERS)):
        mine = corner == index
        out["episodes"].append(mine.sum(1))
        out["success"].append(np.where(mine, success, 0).sum(1) / np.maximum(mine.sum(1), 1))
        out["median_distance"].append(
            [np.median(d[m]) if m.any() else np.nan for d, m in zip(distances, mine, strict=True)]
        )
    result = {name: np.stack(values, axis=1) for name, values in out.items()}
    return result | dict(
        distance=distances,
        corner=corner,
        succeeded=success,
        success_distance=env.config.success_distance,
    )


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], "reacher4 run directories")
    for directory in args.directories:
        result = misses(directory, args.episodes)
        print(f"{directory}, {args.episodes} episodes per member:")
        print("member | success | " + " | ".join(f"corner ({x:+d}, {y:+d})" for x, y in CORNERS))
        for member in range(len(result["distance"])):
            success, median = result["success"][member], result["median_distance"][member]
            cells = [f"{success[c]:.0%}, median {median[c]:.3f} m" for c in range(len(CORNERS))]
            print(f"{member} | {result['succeeded'][member].mean():.0%} | " + " | ".join(cells))
        failed = result["distance"][~result["succeeded"]]
        if failed.size:
            low, median, high = np.quantile(failed, [0.1, 0.5, 0.9])
            print(
                f"failed episodes: {failed.size}; final distance 10/50/90%: "
                f"{low:.3f} / {median:.3f} / {high:.3f} m; within twice the success distance: "
                f"{np.mean(failed < 2 * result['success_distance']):.0%}"
            )


if __name__ == "__main__":
    main()
