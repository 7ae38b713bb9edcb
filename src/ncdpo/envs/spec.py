"""What an agent needs to know about the rows of observations and actions a (vector) env produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncdpo.observations import ObsSpec


@dataclass(frozen=True)
class EnvSpec:
    """Shapes of one row of a vector env: one env for single-agent tasks, one (env, agent) pair for multi-agent ones.

    A multi-agent row's observation is ``[local obs (L), one-hot agent id (n_agents), global state (S)]``:
    the shared actor reads the first ``actor_dim = L + n_agents`` entries, the centralised critic the entries
    from ``critic_start = L`` on (agent id and global state). For a single-agent task both see everything.
    """

    obs_dim: int
    """Width of one row's observation."""
    act_dim: int
    """Continuous actions: the action dimension; discrete actions: the number of actions."""
    discrete: bool = False
    """Discrete (categorical) actions instead of a Box."""
    n_agents: int = 1
    """Agents per env (rows per env copy)."""
    actor_dim: int = 0
    """The actor reads ``obs[:, :actor_dim]`` (0: all of it)."""
    critic_start: int = 0
    """The critic reads ``obs[:, critic_start:]``."""
    obs: dict[str, Any] | None = None
    """A dict observation's :class:`~ncdpo.observations.ObsSpec` (as ``ObsSpec.to_dict()``); None: a flat vector
    of ``obs_dim`` numbers."""

    def __post_init__(self) -> None:
        if self.actor_dim == 0:
            object.__setattr__(self, "actor_dim", self.obs_dim)

    @property
    def obs_spec(self) -> "ObsSpec | None":
        """The dict observation's keys, shapes and dtypes (None for a flat vector)."""
        from ncdpo.observations import ObsSpec

        return None if self.obs is None else ObsSpec.from_dict(self.obs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "EnvSpec":
        """The spec a checkpoint was saved with (checkpoints of older versions hold only the dimensions)."""
        if "spec" in meta:
            return cls(**meta["spec"])
        return cls(int(meta["obs_dim"]), int(meta["act_dim"]))
