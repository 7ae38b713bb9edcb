"""Environments: the task registry, wrappers and vectorised construction.

The names below are imported on first use, so that the torch-only parts of ncdpo (policies, agents, the PPO
update) import without gymnasium or a simulator.
"""

from typing import Any

_NAMES = ("TASKS", "Task", "make_env", "make_vec_env", "register", "task_preset")
__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        from ncdpo.envs import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'ncdpo.envs' has no attribute {name!r}")
