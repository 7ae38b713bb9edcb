"""Deployment: a trained policy as one self-contained module that runs with torch alone (``ncdpo export --format
torchscript``) or with an ONNX runtime (``--format onnx``).

The module maps a batch of *raw* env observations and the decision's standard-normal noise to the env-ready
actions of the decision::

    actions = module(obs, noise)     # obs (B, obs_dim) float32 (or a dict of entries, images uint8 (B, H, W, 3)),
                                     # noise (B, *noise_shape) float32 -> actions (B, act_steps, act_dim) float32

Inside: the observation normalisation saved with the policy, the policy (a diffusion chain unrolled over its
denoising steps, or the Gaussian MLP's mean), and the map from [-1, 1] onto the env's action bounds. It acts
as the deterministic policy (no exploration noise on the last step); the chain's noise is an input, so the same
``noise`` gives the same actions (:func:`draw_noise` draws what ``ncdpo.load_policy(..., seed=s)`` draws). A
TorchScript file carries its description (env, observation entries, noise shape, act_steps, bounds) as
``extra/ncdpo.json`` (an ONNX file as the metadata entry ``ncdpo.json``); :func:`load_deployed` reads both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ncdpo.errors import NcdpoError

FORMATS = ("safetensors", "torchscript", "onnx")
EXTRA = "ncdpo.json"


class _Normalize(nn.Module):
    """``clip((o - mean) / sqrt(var + 1e-8), -clip, clip)`` in float64, as the training-time normaliser."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, clip: float, enabled: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float64)))
        self.register_buffer("scale", torch.as_tensor(np.sqrt(np.asarray(var, np.float64) + 1e-8)))
        self.clip, self.enabled = float(clip), bool(enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x.float()
        return ((x.double() - self.mean) / self.scale).clamp(-self.clip, self.clip).float()


class DeployedPolicy(nn.Module):
    """A policy with its observation normalisation and action bounds inside (see the module docstring)."""

    def __init__(self, agent: Any, obs_norm: Any, low: np.ndarray, high: np.ndarray, noise_mean: bool = False) -> None:
        super().__init__()
        from ncdpo.algos import DPPOAgent, NCDPOAgent, PPOAgent

        if agent.discrete:
            raise NcdpoError("export to torchscript/onnx supports continuous actions only (this policy is discrete)")
        self.agent = agent
        self.kind = "ncdpo" if isinstance(agent, NCDPOAgent) else "dppo" if isinstance(agent, DPPOAgent) else "ppo"
        if self.kind == "ppo" and not isinstance(agent, PPOAgent):
            raise NcdpoError(f"export does not know the agent {type(agent).__name__}")
        self.noise_mean = bool(noise_mean)
        if self.noise_mean and getattr(agent, "noise_policy", None) is None:
            raise NcdpoError("--noise-mean needs an NCDPO policy with a noise policy")
        self.dict_obs = agent.obs_spec is not None
        if self.dict_obs:
            stats, clip, on = obs_norm.rms.stats, obs_norm.clip, obs_norm.enabled
            self.norms = nn.ModuleDict({k: _Normalize(stats[k].mean, stats[k].var, clip, on) for k in obs_norm.lowdim})
            self.image_keys = list(obs_norm.images)
        else:
            self.norm = _Normalize(obs_norm.rms.mean, obs_norm.rms.var, obs_norm.clip, obs_norm.enabled)
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, np.float32)))
        pol = agent.policy
        self.act_steps = int(agent.act_steps) if hasattr(agent, "act_steps") else int(pol.act_steps)
        if self.kind == "ncdpo":
            self.noise_shape = (pol.n_chain, pol.horizon, pol.act_dim)
        elif self.kind == "dppo":
            self.noise_shape = (pol.n_chain + 1, pol.horizon, pol.act_dim)
        else:
            self.noise_shape = (1,)

    # ---------------------------------------------------------------- the computation
    def _normalized(self, obs: Any) -> Any:
        if not self.dict_obs:
            return self.norm(obs)
        out = {k: obs[k] for k in self.image_keys}
        for k, m in self.norms.items():
            out[k] = m(obs[k])
        return out

    def _chunk(self, obs: Any, noise: torch.Tensor) -> torch.Tensor:
        """Normalised actions (B, act_steps, act_dim) of the deterministic policy given the noise."""
        agent, pol = self.agent, self.agent.policy
        if self.kind == "ppo":
            return pol.act(agent.actor_obs(obs), deterministic=True)[0]
        feat = pol.encode(agent.actor_obs(obs))
        B = feat.shape[0]
        if self.kind == "ncdpo":
            scale = pol.cfg.chain_noise_scale
            eps = noise if scale == 1.0 else noise * scale
            np_ = getattr(agent, "noise_policy", None)
            if np_ is not None:
                c = np_.n_covered
                xi_c = np_.draw(feat, eps[:, :c], self.noise_mean)
                eps = xi_c if c == eps.shape[1] else torch.cat([xi_c, eps[:, c:]], 1)
            return pol.chain_mean(feat, eps)[:, : pol.act_steps]
        # DPPO's deterministic chain: its own per-step std (0 on the last step), the early steps frozen
        x = noise[:, 0].reshape(B, -1)
        for j in range(pol.n_chain):
            ft = j >= agent.first_ft
            mean = pol.step_mean(x, feat, j, pol.denoiser if ft else agent.base)
            std = 0.0 if j + 1 == pol.n_chain else float(agent.det_std[j])
            z = noise[:, j + 1].reshape(B, -1).clamp(-agent.q.randn_clip, agent.q.randn_clip)
            x = mean + std * z
            if j + 1 == pol.n_chain:
                x = x.clamp(-1.0, 1.0)
        return x.view(B, pol.horizon, pol.act_dim)[:, : agent.act_steps]

    def forward(self, obs: Any, noise: torch.Tensor) -> torch.Tensor:
        a = self._chunk(self._normalized(obs), noise).clamp(-1.0, 1.0)
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    # ---------------------------------------------------------------- description
    def describe(self, env_id: str, source: str) -> dict[str, Any]:
        spec = self.agent.obs_spec
        obs = (
            {"type": "dict", "keys": [[k, list(s), d] for k, s, d in spec.keys]}
            if spec is not None
            else {"type": "vector", "dim": int(self.agent.spec.obs_dim)}
        )
        return {
            "format": "ncdpo-deployed",
            "format_version": 1,
            "env_id": env_id,
            "algo": self.kind,
            "source": source,
            "obs": obs,
            "noise_shape": list(self.noise_shape),
            "act_steps": self.act_steps,
            "act_dim": int(self.agent.spec.act_dim),
            "action_low": self.low.tolist(),
            "action_high": self.high.tolist(),
            "noise_mean": self.noise_mean,
            "usage": "actions = module(obs, noise); noise ~ N(0, I) of shape (B, *noise_shape); actions (B, act_steps, "
            "act_dim) in env units, to execute in order",
        }

    def example_inputs(self, batch: int = 2) -> tuple[Any, torch.Tensor]:
        spec = self.agent.obs_spec
        if spec is None:
            obs: Any = torch.zeros(batch, int(self.agent.spec.obs_dim))
        else:
            obs = {
                k: (torch.zeros(batch, *s, dtype=torch.uint8) if d == "uint8" else torch.zeros(batch, *s))
                for k, s, d in spec.keys
            }
        return obs, torch.zeros(batch, *self.noise_shape)


def draw_noise(desc: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    """The noise ``ncdpo.load_policy(..., seed=seed)`` draws for its first decision on ``batch`` rows, in the
    module's layout: NCDPO one ``torch.randn(batch, *noise_shape)``; DPPO the initial latent then one draw per
    denoising step, each ``torch.randn(batch, horizon * act_dim)``. The caller's RNG is left as it was."""
    shape = tuple(desc["noise_shape"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if desc["algo"] != "dppo":
            return torch.randn(batch, *shape)
        return torch.stack([torch.randn(batch, int(np.prod(shape[1:]))).view(batch, *shape[1:])
                            for _ in range(shape[0])], 1)  # fmt: skip


def deployed_policy(path: str | Path, noise_mean: bool = False) -> tuple[DeployedPolicy, dict[str, Any]]:
    """The :class:`DeployedPolicy` of a checkpoint (on CPU, eval mode) and its description."""
    from ncdpo.api import Policy

    pol = Policy(path, "cpu", deterministic=True)
    if pol.discrete:
        raise NcdpoError(f"{path}: export to torchscript/onnx supports continuous actions only (this one is discrete)")
    m = DeployedPolicy(pol.agent, pol.obs_norm, pol.action_low, pol.action_high, noise_mean).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m, m.describe(pol.env_id, str(pol.checkpoint.path))


def export_torchscript(path: str | Path, out: str | Path, noise_mean: bool = False) -> Path:
    """Trace the deployed policy (the chain unrolled) and save it, description inside; written atomically."""
    from ncdpo.checkpoint import atomic_write_bytes

    m, desc = deployed_policy(path, noise_mean)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(m, m.example_inputs(), check_trace=False, strict=False)
    import io

    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={EXTRA: json.dumps(desc)})
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def export_onnx(path: str | Path, out: str | Path, noise_mean: bool = False) -> Path:
    """Export the deployed policy to ONNX (dynamic batch), description as metadata; needs the ``onnx`` package."""
    try:
        import onnx
    except ImportError:
        raise NcdpoError("--format onnx needs the onnx package (pip install onnx onnxscript)") from None
    import io
    import tempfile

    from ncdpo.checkpoint import atomic_write_bytes

    m, desc = deployed_policy(path, noise_mean)
    obs, noise = m.example_inputs()
    names = list(obs) if isinstance(obs, dict) else ["obs"]
    dyn = {n: {0: "batch"} for n in names + ["noise"]}
    dyn["actions"] = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), torch.random.fork_rng(devices=[]):
        import warnings

        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        f = Path(tmp) / "policy.onnx"
        try:
            torch.onnx.export(
                m, (obs, noise), str(f), input_names=names + ["noise"], output_names=["actions"],
                dynamic_axes=dyn, dynamo=False,
            )  # fmt: skip
        except Exception as e:  # the exporter raises many types; report the first line
            raise NcdpoError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        model = onnx.load(str(f))
    entry = model.metadata_props.add()
    entry.key, entry.value = EXTRA, json.dumps(desc)
    buf = io.BytesIO(model.SerializeToString())
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def load_deployed(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript file written by ``ncdpo export --format torchscript``, and its description."""
    extra = {EXTRA: ""}
    try:
        m = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, OSError, ValueError) as e:
        raise NcdpoError(f"{path} is not a TorchScript policy ({str(e).splitlines()[0]})") from None
    try:
        desc = json.loads(extra[EXTRA])
    except json.JSONDecodeError:
        raise NcdpoError(f"{path} is a TorchScript file without ncdpo's description (not from ncdpo export)") from None
    return m, desc
