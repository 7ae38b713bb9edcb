"""Are a policy's Lift failures driven by the initial state or by the chain's noise?

    python benchmarks/noise_vs_state.py shipped:lift      # or a run folder / checkpoint

16 fixed initial states (reset seeds 100-115) x 4 noise seeds (torch seeds 0-3), deterministic policy: prints
the success matrix (rows: states), the per-state mean and the overall success (benchmarks/RESULTS.md, section 6).
"""

import sys

import numpy as np
import torch

from ncdpo.algos import load_agent
from ncdpo.envs.registry import make_vec_env
from ncdpo.training.evaluation import run_episodes


def main() -> None:
    agent, norm, _ = load_agent(sys.argv[1])
    torch.set_num_threads(1)
    seeds, R = list(range(100, 116)), 4
    envs = make_vec_env("lift", len(seeds), 4, 0, "async")
    res = np.zeros((len(seeds), R))
    for k in range(R):
        torch.manual_seed(k)
        with torch.no_grad():
            r = run_episodes(agent, norm, envs, len(seeds), True, seeds)  # one episode per initial state
        res[r["rows"], k] = r["successes"]  # Lift: success ends the episode
    envs.close()
    print(sys.argv[1])
    print(res.astype(int))
    print("per-state mean", res.mean(1))
    print("overall", res.mean())


if __name__ == "__main__":
    main()
