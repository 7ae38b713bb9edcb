"""Evaluation: complete episodes of a policy, with one rollout helper (:func:`decide`) that evaluation, dataset
collection, the public :class:`ncdpo.Policy` and the benchmarks share."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ncdpo.algos.base import ActOutput, Agent, check_obs_fits
from ncdpo.envs.registry import action_mask, done_values, env_spec, make_vec_env
from ncdpo.observations import to_tensor
from ncdpo.policies.common import ObsNormalizer

DEFAULT_EVAL_SEED = 424242
"""The benchmarks' evaluation seed (the manipulation tables'); ``ncdpo eval --seed`` defaults to 0."""


def decide(
    agent: Agent, obs_norm: ObsNormalizer, raw_obs: Any, deterministic: bool = True, mask: np.ndarray | None = None
) -> ActOutput:
    """One batched decision on raw env observations (an array, or a dict of them): normalise, act (under the
    legal-action ``mask``, if any)."""
    device = next(agent.parameters()).device
    obs_t = to_tensor(obs_norm(raw_obs), device)
    if mask is None:
        return agent.act(obs_t, deterministic)
    return agent.act(obs_t, deterministic, mask=torch.as_tensor(mask, device=device))


@torch.no_grad()
def evaluate(
    agent: Agent,
    obs_norm: ObsNormalizer,
    env_id: str,
    n_episodes: int,
    act_steps: int,
    deterministic: bool = True,
    seed: int = 0,
    max_episode_steps: int = 0,
    max_envs: int = 16,
    vector: str = "auto",
    envs: Any = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``n_episodes`` complete episodes; each env contributes a fixed quota (no bias to short ones).

    ``envs``: a vector env made by :func:`make_vec_env` for this task to use (and leave open) instead of
    making one; every env is reset with ``seed`` first, so the result does not depend on what ran before.
    The policy's noise (a diffusion chain's initial latent even when ``deterministic``) is drawn from torch's
    generator seeded with ``seed`` too, inside :func:`torch.random.fork_rng`: the result is reproducible and
    the caller's generator state is left as it was. ``options``: the task's constructor options (cameras,
    image size: :func:`~ncdpo.envs.registry.env_kwargs` of the checkpoint's config).
    """
    device = next(agent.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        own = envs is None
        if own:
            envs = make_vec_env(env_id, min(n_episodes, max_envs), act_steps, max_episode_steps, vector, options)
            saved = getattr(agent, "spec", None)  # any object with act() and parameters() evaluates
            if saved is not None and (saved.obs is not None or env_spec(envs).obs is not None):
                try:  # the cameras and image sizes the policy was trained on
                    check_obs_fits(saved, env_spec(envs), env_id, "the policy")
                except Exception:
                    envs.close()
                    raise
        try:
            from ncdpo.envs.registry import episode_info_keys

            return run_episodes(agent, obs_norm, envs, n_episodes, deterministic, seed, episode_info_keys(env_id))
        finally:
            if own:
                envs.close()


def run_episodes(
    agent: Agent,
    obs_norm: ObsNormalizer,
    envs: Any,
    n_episodes: int,
    deterministic: bool,
    seed: int | list[int],
    info_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Step ``envs`` (reset with ``seed``, or one seed per env) until each env row has finished its quota of the
    ``n_episodes``; ``rows`` in the result is the env row each recorded episode ran in. ``info_keys``: episode-end
    ``info`` entries to average besides ``is_success`` (as ``<key>_rate``)."""
    n_rows = envs.num_envs
    M = getattr(envs, "n_agents", 1)  # a multi-agent env's episodes are reported on agent 0's row of each copy
    n_envs = n_rows // M
    quota = np.zeros(n_rows, np.int64)
    quota[::M] = np.full(n_envs, n_episodes // n_envs) + (np.arange(n_envs) < n_episodes % n_envs)
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[float] = []
    extra: dict[str, list[float]] = {k: [] for k in info_keys}
    rows: list[int] = []
    got = np.zeros(n_rows, np.int64)
    obs, info = envs.reset(seed=seed)
    while (got < quota).any():
        out = decide(agent, obs_norm, obs, deterministic, action_mask(info, n_rows))
        obs, _, term, trunc, info = envs.step(out.action.cpu().numpy())
        done = term | trunc
        ep = info.get("final_info", {}).get("episode")
        succ = done_values(info, "is_success", done, default=math.nan)
        ext = {k: done_values(info, k, done, default=math.nan) for k in info_keys}
        for i in np.nonzero(done)[0]:
            if got[i] < quota[i]:
                returns.append(float(ep["r"][i]))
                lengths.append(int(ep["l"][i]))
                successes.append(float(succ[i]))
                for k, v in ext.items():
                    extra[k].append(float(v[i]))
                rows.append(int(i))
                got[i] += 1
    known = [x for x in successes if not math.isnan(x)]
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        # fraction of episodes whose final step reported info["is_success"] true (nan: the env does not report it)
        "success_rate": float(np.mean(known)) if known else math.nan,
        "returns": returns,
        "successes": successes,
        "rows": rows,
        # the task's other episode-end entries (e.g. kitchen's completion: the fraction of its subtasks done)
        **{f"{k}_rate": float(np.nanmean(v)) if v else math.nan for k, v in extra.items()},
    }


def eval_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The ``eval/*`` columns of a training log from an :func:`evaluate` result."""
    return {
        "eval/return_mean": result["return_mean"],
        "eval/return_std": result["return_std"],
        "eval/success_rate": result["success_rate"],
        **{f"eval/{k}": v for k, v in result.items() if k.endswith("_rate") and k != "success_rate"},
    }


def no_eval(env_id: str) -> dict[str, float]:
    """The ``eval/*`` columns of a row without an evaluation (all nan), the task's extra rates included."""
    from ncdpo.envs.registry import episode_info_keys

    return {**NO_EVAL, **{f"eval/{k}_rate": math.nan for k in episode_info_keys(env_id)}}


NO_EVAL = {"eval/return_mean": math.nan, "eval/return_std": math.nan, "eval/success_rate": math.nan}
