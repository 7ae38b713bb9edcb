"""Observation encoders for dict observations: one image network per camera, concatenated with low-dim entries.

The actor's encoder is part of its policy (:attr:`DiffusionPolicy.encoder`, :attr:`GaussianPolicy.encoder`),
so a checkpoint's policy carries it and ``--init`` loads it; the critic has its own (:attr:`Critic.encoder`),
or, with ``critic.privileged``, none: it reads every low-dim entry, the simulator's object state included.
Both read normalised low-dim entries and raw uint8 images, which they scale to [-0.5, 0.5] themselves.
An encoder runs once per decision: the K steps of the denoising chain reuse its features.

Image networks (``encoder.kind``):

* ``conv``: DrQ's conv stack made cheaper for a CPU -- four 3x3 convolutions with ``channels`` channels
  (stride 2, 2, 1, 1) and ReLUs, then ``Linear -> LayerNorm -> tanh`` to ``feature_dim`` features;
* ``vit``: DPPO's small ViT -- ``patch`` x ``patch`` patches embedded to ``embed_dim`` with learned positions,
  ``depth`` pre-norm transformer blocks of ``heads`` heads, a final LayerNorm, then the same
  ``Linear -> LayerNorm -> tanh`` head over all patch tokens.

:func:`random_shift` is DrQ's augmentation: each image shifted by up to ``pad`` pixels (edges repeated).
"""

from __future__ import annotations

import torch
from torch import nn

from ncdpo.config import EncoderConfig
from ncdpo.errors import NcdpoError
from ncdpo.observations import ObsSpec


def random_shift(img: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (B, H, W, C) shifted by integer offsets in [-pad, pad] drawn per image (from ``generator``, on the
    CPU, so a seed gives the same shifts on every device), the border pixels repeated; dtype kept."""
    if pad <= 0:
        return img
    B, H, W = img.shape[:3]
    shifts = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).to(img.device) - pad
    rows = (torch.arange(H, device=img.device)[None] + shifts[:, :1]).clamp(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=img.device)[None] + shifts[:, 1:]).clamp(0, W - 1)  # (B, W)
    b = torch.arange(B, device=img.device)[:, None, None]
    return img[b, rows[:, :, None], cols[:, None, :]]


def shift_images(obs: dict[str, torch.Tensor], keys: list[str], pad: int, generator: torch.Generator | None = None):
    """``obs`` with its image entries ``keys`` randomly shifted (:func:`random_shift`), in key order."""
    out = dict(obs)
    for k in keys:
        out[k] = random_shift(obs[k], pad, generator)
    return out


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())


class ConvNet(nn.Module):
    """DrQ-style conv stack for one camera (see the module docstring)."""

    def __init__(self, size: int, cfg: EncoderConfig) -> None:
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = []
        in_c, s = 3, size
        for stride in (2, 2, 1, 1):
            s = (s - 3) // stride + 1
            if s < 1:
                raise NcdpoError(f"images of {size}x{size} are too small for the conv encoder (at least 15 px)")
            layers += [nn.Conv2d(in_c, c, 3, stride), nn.ReLU()]
            in_c = c
        self.convs = nn.Sequential(*layers)
        self.head = _head(c * s * s, cfg.feature_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``img``: uint8 (B, H, W, 3) -> (B, feature_dim)."""
        x = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.head(self.convs(x).flatten(1))


class ViT(nn.Module):
    """DPPO's small ViT for one camera (see the module docstring)."""

    def __init__(self, size: int, cfg: EncoderConfig) -> None:
        super().__init__()
        if size % cfg.patch:
            raise NcdpoError(f"encoder.patch {cfg.patch} must divide the image size {size} (vit encoder)")
        n = (size // cfg.patch) ** 2
        self.embed = nn.Conv2d(3, cfg.embed_dim, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, n, cfg.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.embed_dim, cfg.heads, 4 * cfg.embed_dim, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.depth)
        )  # fmt: skip
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head = _head(n * cfg.embed_dim, cfg.feature_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, tokens, embed)
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.norm(t).flatten(1))


NETS = {"conv": ConvNet, "vit": ViT}


class ObsEncoder(nn.Module):
    """Features of a dict observation: ``[net(image) for each image key] + [low-dim entries]``, concatenated."""

    def __init__(self, spec: ObsSpec, image_keys: list[str], lowdim_keys: list[str], cfg: EncoderConfig) -> None:
        super().__init__()
        self.image_keys, self.lowdim_keys = list(image_keys), list(lowdim_keys)
        self.nets = nn.ModuleDict({k: NETS[cfg.kind](spec.shape(k)[0], cfg) for k in self.image_keys})
        self.out_dim = len(self.image_keys) * cfg.feature_dim + spec.lowdim_dim(self.lowdim_keys)
        if self.out_dim == 0:
            raise NcdpoError("the encoder reads no observation entries")

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.nets[k](obs[k]) for k in self.image_keys]
        parts += [obs[k].float().flatten(1) for k in self.lowdim_keys]
        return torch.cat(parts, dim=-1)


def actor_encoder(spec: ObsSpec, cfg: EncoderConfig) -> ObsEncoder:
    """The actor's: every camera and the low-dim entries that are not privileged (proprioception)."""
    low = [k for k in spec.lowdim_keys if k not in spec.privileged]
    return ObsEncoder(spec, spec.image_keys, low, cfg)


def critic_encoder(spec: ObsSpec, cfg: EncoderConfig, privileged: bool) -> ObsEncoder:
    """The critic's own: as the actor's, or (``privileged``) every low-dim entry and no camera."""
    if privileged:
        if not spec.privileged:
            raise NcdpoError(
                "critic.privileged needs an env with privileged state entries (the -image tasks' 'object'); "
                f"this observation has {spec.describe()}"
            )
        return ObsEncoder(spec, [], spec.lowdim_keys, cfg)
    low = [k for k in spec.lowdim_keys if k not in spec.privileged]
    return ObsEncoder(spec, spec.image_keys, low, cfg)
