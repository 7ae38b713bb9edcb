"""``--env.vector ray``: env copies in Ray actors, with the semantics of ``async`` (gymnasium's AsyncVectorEnv).

Each sub-env lives in its own actor (one CPU each by default, anywhere on the Ray cluster), built by the same
picklable constructor as an ``async`` worker, so it is wrapped in the same :class:`~ncdpo.envs.wrappers.WorkerGuard`.
The vector env resets finished episodes in the same step (``AutoresetMode.SAME_STEP``: the final observation and
info in ``info["final_obs"]`` / ``info["final_info"]``), merges infos exactly as AsyncVectorEnv does (gymnasium's
``_add_info``), seeds sub-env ``i`` with ``seed + i`` and reaches each env's ``ncdpo_snapshot`` through
``get_attr`` / ``set_attr``, so checkpoints hold the env states and resume bitwise.

Errors: an env that raises is reported with WorkerGuard's one line (``env ID (worker i, seed s) raised ...``); an
actor that dies (its process killed, its node lost) with ``env ID (worker i, seed s) died: ...``; actors that the
cluster cannot place within :data:`PLACE_TIMEOUT_S` with a line that names the CPUs they need. Nothing hangs on a
dead actor: Ray fails the pending call.

Ray: the process connects to ``address`` (``env.ray_address``; ``RAY_ADDRESS`` where that is empty) or, where
neither names a cluster, starts a local instance sized to this machine (at least one CPU per env, as ``async``
runs more subprocesses than cores).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from ncdpo.errors import EnvWorkerError, NcdpoError

PLACE_TIMEOUT_S = 120.0
"""How long the env actors may take to start (placement on the cluster, env construction) before it is an error."""


def ensure_ray(address: str = "", min_cpus: float = 1.0) -> None:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local instance with at least
    ``min_cpus`` CPUs; a no-op where this process is connected already. An unreachable address is one line."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        check_reachable(address)
        host = address.rpartition(":")[0].strip("[]")
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        _token_auth_if_available()
        try:
            with _loopback_only() if loopback else contextlib.nullcontext():  # a cluster on this machine's loopback
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as e:  # ConnectionError, RuntimeError: one line, whatever Ray raised
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise NcdpoError(f"cannot connect to the Ray cluster at {address}: {first}") from None
        return
    cpus = max(float(os.cpu_count() or 1), float(min_cpus))
    with _loopback_only():
        ray.init(
            address="local",  # a new instance of this process's own, never one that `ray start` left running
            _node_ip_address="127.0.0.1",
            num_cpus=int(np.ceil(cpus)),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=True,
        )


def _token_auth_if_available() -> None:
    """Ray 2.60 clusters started with ``ray start`` use token authentication when a token exists (``~/.ray/auth_token``,
    ``RAY_AUTH_TOKEN``); ``ray.init(address="auto")`` then sends it, ``ray.init(address=HOST:PORT)`` does not unless
    ``RAY_AUTH_MODE=token``. Turn that on where a token is there and the mode is not set."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # another Ray version: its own defaults
        return
    with contextlib.suppress(Exception):
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray instance bound to 127.0.0.1 only: Ray otherwise replaces a loopback node address by the machine's
    routable one (so that other nodes could join). Its switch for that is ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read by the processes Ray starts (from the environment) and by this one (the constant, read at import)."""
    import ray._private.ray_constants as constants

    key = constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_const = os.environ.get(key), constants.ENABLE_RAY_CLUSTER
    os.environ[key], constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = old_const
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connection to ``host:port`` (``ray://`` and ``auto`` are left to Ray), so a wrong address is a one-line
    error after ``timeout_s`` instead of Ray's long retry loop."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise NcdpoError(f"Ray address '{address}' is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise NcdpoError(
            f"cannot reach the Ray cluster at {address}: {reason} (is `ray start --head` running?)"
        ) from None


class _EnvActor:
    """One sub-env in a Ray actor: the AsyncVectorEnv worker's commands, as methods."""

    def __init__(self, maker: Any) -> None:
        self.env = maker()

    def spaces(self) -> tuple[Any, Any]:
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict | None) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(
            action.copy() if isinstance(action, np.ndarray) else action
        )
        if terminated or truncated:  # AutoresetMode.SAME_STEP, as gymnasium's async worker does it
            reset_obs, reset_info = self.env.reset()
            info = {"final_info": info, "final_obs": obs, **reset_info}
            obs = reset_obs
        return obs, reward, terminated, truncated, info

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        attr = self.env.get_wrapper_attr(name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def set_attr(self, name: str, value: Any) -> None:
        # arrays that Ray hands over from its object store are read-only views: the env gets its own copies
        self.env.set_wrapper_attr(name, deepcopy(value))

    def close(self) -> None:
        self.env.close()

    def pid(self) -> int:
        return os.getpid()


class RayVectorEnv(VectorEnv):
    """``len(makers)`` envs, each in a Ray actor with ``num_cpus`` CPUs, stepped in lock-step (SAME_STEP autoreset)."""

    def __init__(self, makers: list[Any], env_id: str, num_cpus: float = 1.0, address: str = "") -> None:
        import ray

        ensure_ray(address, min_cpus=num_cpus * len(makers))
        self.env_id = env_id
        self.num_envs = len(makers)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self._seeds = np.full(self.num_envs, -1, np.int64)  # per worker, for the error lines (-1: never seeded)
        actor_cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(_EnvActor)
        self._actors = [actor_cls.remote(m) for m in makers]
        try:
            spaces = self._get([a.spaces.remote() for a in self._actors], "start", timeout=PLACE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self._kill()
            have = ray.cluster_resources().get("CPU", 0)
            raise NcdpoError(
                f"env {env_id}: the Ray cluster did not start {self.num_envs} env actors of {num_cpus:g} CPU each "
                f"within {PLACE_TIMEOUT_S:.0f} s (it has {have:g} CPUs); use fewer envs or --env.ray-cpus"
            ) from None
        except BaseException:
            self._kill()
            raise
        self.single_observation_space, self.single_action_space = spaces[0]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observations = create_empty_array(self.single_observation_space, n=self.num_envs, fn=np.zeros)
        self.closed = False

    # ------------------------------------------------------------------ the remote calls and their errors
    def _get(self, refs: list[Any], what: str, timeout: float | None = None) -> list[Any]:
        """``ray.get`` of one call per actor; an env's own error and a dead actor become :class:`EnvWorkerError`."""
        import ray

        try:
            return ray.get(refs, timeout=timeout)  # one round trip for all; on an error, find whose it was
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError):
            pass
        out: list[Any] = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=timeout))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if e.cause is not None else e
                if isinstance(cause, NcdpoError):
                    raise type(cause)(str(cause).splitlines()[0]) from None
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                raise EnvWorkerError(
                    f"env {self.env_id} (worker {i}, seed {self._seed(i)}) raised {type(cause).__name__} in {what}: "
                    f"{first}"
                ) from None
            except ray.exceptions.RayActorError as e:
                reason = _first_reason(e)
                raise EnvWorkerError(
                    f"env {self.env_id} (worker {i}, seed {self._seed(i)}) died in {what}: Ray actor lost ({reason})"
                ) from None
        return out

    def _seed(self, i: int) -> int | None:
        return None if self._seeds[i] < 0 else int(self._seeds[i])

    def _kill(self) -> None:
        import ray

        for a in getattr(self, "_actors", []):
            try:
                ray.kill(a)
            except Exception:  # an actor that is gone already
                pass

    # ------------------------------------------------------------------ the VectorEnv API
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
        for i, s in enumerate(seeds):
            if s is not None:
                self._seeds[i] = s
        results = self._get([a.reset.remote(s, options) for a, s in zip(self._actors, seeds)], "reset")
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(results):
            infos = self._add_info(infos, info, i)
        self.observations = concatenate(self.single_observation_space, [r[0] for r in results], self.observations)
        return deepcopy(self.observations), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        per_env = list(iterate(self.action_space, actions))
        results = self._get([a.step.remote(act) for a, act in zip(self._actors, per_env)], "step")
        infos: dict[str, Any] = {}
        for i, r in enumerate(results):
            infos = self._add_info(infos, r[4], i)
        self.observations = concatenate(self.single_observation_space, [r[0] for r in results], self.observations)
        return (
            deepcopy(self.observations),
            np.array([r[1] for r in results], dtype=np.float64),
            np.array([r[2] for r in results], dtype=np.bool_),
            np.array([r[3] for r in results], dtype=np.bool_),
            infos,
        )

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return tuple(self._get([a.call.remote(name, args, kwargs) for a in self._actors], f"call {name}"))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"{len(values)} values for {self.num_envs} envs")
        self._get([a.set_attr.remote(name, v) for a, v in zip(self._actors, values)], f"set {name}")

    def actor_pids(self) -> list[int]:
        """The process id of each env actor (tests kill one to check the dead-actor report)."""
        return self._get([a.pid.remote() for a in self._actors], "pid")

    def close_extras(self, **kwargs: Any) -> None:
        import ray

        refs = [a.close.remote() for a in self._actors]
        try:
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
        except Exception:  # a dead actor: nothing to close
            pass
        self._kill()


def _first_reason(e: Exception) -> str:
    """A short reason from a RayActorError (its message spans many lines)."""
    text = str(e).strip()
    for line in text.splitlines():
        line = line.strip()
        if "killed" in line.lower() or "exit" in line.lower() or "died" in line.lower():
            return line[:200]
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
