"""Environments: the task registry, wrappers and vectorised construction."""

from ncdpo.envs.registry import TASKS, Task, make_env, make_vec_env, register, task_preset

__all__ = ["TASKS", "Task", "make_env", "make_vec_env", "register", "task_preset"]
