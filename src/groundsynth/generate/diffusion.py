"""Unconditional (ungrounded) generator: a diffusers ``UNet2DModel`` trained as a DDPM.

Training (Ho et al., 2020): noise an image to a random timestep with the ``DDPMScheduler`` and
regress the noise (``epsilon``) or the velocity (``v_prediction``) with the U-Net; an EMA of the
weights is kept for sampling (``ema_decay`` 0 turns it off). Sampling starts from per-sample
seeded noise and runs DDIM (Song et al., 2021; deterministic, ``eta`` 0) or DPM-Solver++
(Lu et al., 2022; ``DPMSolverMultistepScheduler``) with a configurable number of steps.

The images come without maps: they get labels later from a segmenter (pseudo-labelling), as
ARAS400k's synthetic split did. :mod:`.conditional_diffusion` is the same model given the map.

With few timesteps prefer the ``squaredcos_cap_v2`` schedule: linear betas (1e-4..0.02) over
100 timesteps leave ``sqrt(alpha_bar)`` = 0.6 of the image at the last one, so sampling from
pure noise starts off the training distribution.

Standardisation (``standardise``): the model diffuses ``(x0 - m) / s``, with ``m`` and ``s`` the
per-channel mean and standard deviation of what it diffuses over the training images (measured
once before training, kept with the weights as the U-Net's ``data_mean`` / ``data_std``
buffers); sampling maps back with ``x * s + m`` before clipping. The noise schedule assumes
data of about unit scale; remote-sensing patches in [-1, 1] have a standard deviation near 0.33
(the demo's region A), so without it every timestep is noisier than the schedule says and an
undertrained model falls back on the mean colour. The role is that of latent diffusion's
scaling factor or EDM's ``sigma_data``.

Cascade (``cascade_size``): a base U-Net learns the images at ``cascade_size`` px and a second
U-Net at the patch size adds their detail; see :mod:`.cascade`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import to_model_range, to_uint8
from groundsynth.generate.ema import ema_decay_at, make_ema, update_ema
from groundsynth.generate.module import GeneratorModule
from groundsynth.generate.seeds import derive_seed

__all__ = [
    "SAMPLERS",
    "DiffusionConfig",
    "DiffusionModule",
    "build_unet",
    "sample_images",
]

#: sampler name -> diffusers scheduler class name
SAMPLERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
}
GRID_SAMPLES = 3
#: names of the U-Net buffers holding the (3,) mean and standard deviation of ``standardise``
SHIFT, SCALE = "data_mean", "data_std"
#: training items the standardisation is measured on (evenly spaced; all when fewer)
STANDARDISE_ITEMS = 4096

#: ``denoise(x, t)`` -> the model output (noise or velocity) for noisy images ``x`` at ``t``
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion model and its training/sampling options.

    Attributes:
        block_out_channels: U-Net channels per resolution (one downsampling between each).
        layers_per_block: ResNet layers per U-Net block.
        attention: self-attention in the second-coarsest blocks (as diffusers' DDPM U-Net).
        norm_groups: GroupNorm groups (must divide every entry of ``block_out_channels``;
            ``None``: the greatest common divisor of 32 and the channels).
        num_train_timesteps, beta_schedule, prediction_type: the DDPM noise process.
        lr, weight_decay: AdamW settings.
        ema_decay: decay of the weights' moving average used for sampling (0: off).
        standardise: diffuse standardised images (see the module docstring).
        cascade_size: unconditional kind only: sample a ``cascade_size`` px image with a base
            U-Net, upsample it and let the patch-size U-Net add the detail (:mod:`.cascade`;
            ``None``: one U-Net at the patch size).
        cascade_lr: the base U-Net's learning rate (``None``: ``lr``).
        cascade_every: the patch-size U-Net trains on every ``cascade_every``-th step, the
            (cheaper) base on every step.
        cascade_noise: standard deviation of the noise added to the upsampled base image the
            patch-size U-Net is conditioned on in training (conditioning augmentation).
        sampler: ``ddim`` or ``dpm-solver`` (default for ``generate``; it can override).
        inference_steps: sampling steps (default for ``generate``; it can override).
    """

    block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512, 512)
    layers_per_block: int = 2
    attention: bool = True
    norm_groups: int | None = None
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    standardise: bool = False
    cascade_size: int | None = None
    cascade_lr: float | None = None
    cascade_every: int = 1
    cascade_noise: float = 0.05
    sampler: Literal["ddim", "dpm-solver"] = "dpm-solver"
    inference_steps: int = 25

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "block_out_channels", tuple(int(c) for c in self.block_out_channels)
        )
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise InputError(f"block_out_channels must be positive, got {self.block_out_channels}")
        if self.norm_groups is None:
            object.__setattr__(self, "norm_groups", math.gcd(32, *self.block_out_channels))
        bad = [c for c in self.block_out_channels if c % self.norm_groups]
        if self.norm_groups < 1 or bad:
            raise InputError(
                f"norm_groups {self.norm_groups} must divide every block's channels "
                f"{self.block_out_channels}; lower norm_groups"
            )
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise InputError(f"unknown beta_schedule {self.beta_schedule!r}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise InputError(f"unknown prediction_type {self.prediction_type!r}")
        check_sampler(self.sampler)
        if self.layers_per_block < 1 or self.num_train_timesteps < 2 or self.inference_steps < 1:
            raise InputError("layers_per_block, inference_steps >= 1 and timesteps >= 2 needed")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.cascade_size is not None and self.cascade_size < 1:
            raise InputError(f"cascade_size must be positive, got {self.cascade_size}")
        if self.cascade_every < 1 or self.cascade_noise < 0:
            raise InputError("cascade_every must be >= 1 and cascade_noise >= 0")
        if self.cascade_lr is not None and not self.cascade_lr > 0:
            raise InputError(f"cascade_lr must be positive, got {self.cascade_lr}")

    def resolved(self, image_size: int) -> DiffusionConfig:
        """Checks that ``image_size`` (and ``cascade_size``) fit the U-Net's downsamplings."""
        step = 2 ** (len(self.block_out_channels) - 1)
        sizes = {"image size": image_size}
        if self.cascade_size is not None:
            sizes["cascade_size"] = self.cascade_size
            if self.cascade_size >= image_size or image_size % self.cascade_size:
                raise InputError(
                    f"cascade_size {self.cascade_size} must divide the image size {image_size} "
                    "and be smaller"
                )
        for what, size in sizes.items():
            if size % step:
                raise InputError(
                    f"{what} {size} is not a multiple of {step} (the U-Net downsamples "
                    f"{len(self.block_out_channels) - 1} times)"
                )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data).difference(known)
        if unknown:
            raise InputError(f"unknown diffusion option(s): {sorted(unknown)}")
        return cls(**data)


def check_sampler(name: str) -> str:
    """``name`` if it is a known sampler, else :class:`InputError` listing them."""
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return name


def build_unet(cfg: DiffusionConfig, image_size: int, cond_channels: int = 0) -> nn.Module:
    """The diffusers ``UNet2DModel`` of ``cfg``; ``cond_channels`` conditioning channels (e.g. a
    one-hot map) are concatenated to the 3 image channels of its input."""
    diffusers = lazy_import("diffusers")
    n = len(cfg.block_out_channels)
    attn = n - 2 if cfg.attention and n >= 2 else -1
    down = tuple("AttnDownBlock2D" if i == attn else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if n - 1 - i == attn else "UpBlock2D" for i in range(n))
    unet = diffusers.UNet2DModel(
        sample_size=image_size,
        in_channels=3 + cond_channels,
        out_channels=3,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.block_out_channels,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_groups,
        # diffusers' default head size (8), or one head on narrower blocks
        attention_head_dim=min(8, cfg.block_out_channels[attn]) if attn >= 0 else 8,
    )
    if cfg.standardise:  # identity until measured (DiffusionModule.prepare) or loaded
        unet.register_buffer(SHIFT, torch.zeros(3))
        unet.register_buffer(SCALE, torch.ones(3))
    return unet


def build_network(cfg: DiffusionConfig, image_size: int, cond_channels: int = 0) -> nn.Module:
    """The sampling network of ``cfg``: :func:`build_unet`, or with ``cascade_size`` a
    :class:`~groundsynth.generate.cascade.CascadeUNet` (unconditional only)."""
    if cfg.cascade_size is None:
        return build_unet(cfg, image_size, cond_channels)
    if cond_channels:
        raise InputError("cascade_size is for the unconditional diffusion kind only")
    from groundsynth.generate.cascade import CascadeUNet

    return CascadeUNet(cfg, image_size)


def standardisation(unet: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``unet``'s (1, 3, 1, 1) mean and standard deviation of ``standardise`` (``None``: the
    model diffuses the images as they are)."""
    mean, std = getattr(unet, SHIFT, None), getattr(unet, SCALE, None)
    if mean is None or std is None:
        return None
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def set_standardisation(unet: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Set ``unet``'s (3,) ``standardise`` buffers."""
    getattr(unet, SHIFT).copy_(mean)
    getattr(unet, SCALE).copy_(std)


def training_scheduler(cfg: DiffusionConfig) -> Any:
    """The DDPM noise schedule of ``cfg``."""
    diffusers = lazy_import("diffusers")
    return diffusers.DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )


def sampling_scheduler(cfg: DiffusionConfig, sampler: str | None = None) -> Any:
    """A fresh DDIM or DPM-Solver scheduler on ``cfg``'s noise schedule."""
    diffusers = lazy_import("diffusers")
    name = SAMPLERS[check_sampler(sampler or cfg.sampler)]
    return getattr(diffusers, name).from_config(training_scheduler(cfg).config)


def initial_noise(seeds: list[int], image_size: int, device: Any) -> torch.Tensor:
    """(B, 3, S, S) standard normal noise, one draw per seed on the CPU (device-independent)."""
    rows = [
        torch.randn((3, image_size, image_size), generator=torch.Generator().manual_seed(int(s)))
        for s in seeds
    ]
    return torch.stack(rows).to(device)


@torch.no_grad()
def sample_images(
    unet: nn.Module,
    cfg: DiffusionConfig,
    seeds: list[int],
    image_size: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    autocast: torch.dtype | None = None,
    denoise: Denoiser | None = None,
    offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample one image per seed: (B, 3, S, S) in [-1, 1].

    ``denoise(x, t)`` gives the model output (noise or velocity) at ``x``; by default
    ``unet(x, t).sample`` (conditional kinds pass one that adds their map). ``offset``
    (B, 3, S, S) is added to the sampled values before clipping (the class-mean prior of
    :mod:`.conditional_diffusion`). A :class:`~groundsynth.generate.cascade.CascadeUNet`
    samples its base, then the detail (:func:`~groundsynth.generate.cascade.sample_cascade`).
    """
    from groundsynth.generate.cascade import CascadeUNet, sample_cascade

    if isinstance(unet, CascadeUNet):
        return sample_cascade(
            unet, cfg, seeds, image_size, sampler=sampler, steps=steps, autocast=autocast
        )
    device = next(unet.parameters()).device
    if denoise is None:
        denoise = lambda x, t: unet(x, t).sample  # noqa: E731
    scheduler = sampling_scheduler(cfg, sampler)
    with warnings.catch_warnings():  # diffusers' DPM-Solver trips a numpy 2 deprecation
        warnings.filterwarnings("ignore", message=r".*__array__ implementation.*")
        scheduler.set_timesteps(steps or cfg.inference_steps, device=device)
    x = initial_noise(seeds, image_size, device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            out = denoise(inp, t)
        x = scheduler.step(out.float(), t, x).prev_sample
    scale = standardisation(unet)
    if scale is not None:
        x = x * scale[1].to(x.dtype) + scale[0].to(x.dtype)
    if offset is not None:
        x = x + offset.to(x.dtype)
    return x.clamp(-1, 1)


class DiffusionModule(GeneratorModule):
    """DDPM training of the U-Net (manual optimisation, one AdamW)."""

    kind = "diffusion"
    loss_names = ("loss",)
    #: conditioning channels concatenated to the U-Net's input (0: unconditional)
    cond_channels = 0

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.model_cfg: DiffusionConfig = config.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.unet = build_network(self.model_cfg, config.image_size, self.cond_channels)
        self.unet_ema = make_ema(self.unet) if self.model_cfg.ema_decay > 0 else None
        self.noise_schedule = training_scheduler(self.model_cfg)
        if self.model_cfg.cascade_size is not None:
            from groundsynth.generate.cascade import LOSS_NAMES

            self.loss_names = LOSS_NAMES

    def networks(self) -> dict[str, nn.Module]:
        nets = {"unet": self.unet}
        if self.unet_ema is not None:
            nets["unet_ema"] = self.unet_ema
        return nets

    def optimizer_names(self) -> tuple[str, ...]:
        return ("unet",)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        m = self.model_cfg
        if m.cascade_size is not None:  # one AdamW, a learning rate per U-Net
            groups = [
                {"params": self.unet.base.parameters(), "lr": m.cascade_lr or m.lr},
                {"params": self.unet.detail.parameters(), "lr": m.lr},
            ]
            return torch.optim.AdamW(groups, lr=m.lr, weight_decay=m.weight_decay)
        return torch.optim.AdamW(self.unet.parameters(), lr=m.lr, weight_decay=m.weight_decay)

    def condition(
        self, batch: dict[str, torch.Tensor], gen: torch.Generator
    ) -> torch.Tensor | None:
        """The ``cond_channels`` channels concatenated to the noisy images (``None``: none)."""
        return None

    def target_image(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image the model learns to denoise (the batch's; conditional kinds may
        subtract a prior), before standardisation."""
        return batch["image"]

    def prepare(self, items: Any) -> None:
        """With ``standardise``: measure the per-channel mean and standard deviation of
        :meth:`target_image` over the training items (centred, not augmented; at most
        ``STANDARDISE_ITEMS``, evenly spaced) into the U-Net's buffers (and its EMA's); a
        cascade measures what each of its two U-Nets diffuses."""
        if not self.model_cfg.standardise:
            return
        if self.model_cfg.cascade_size is not None:
            from groundsynth.generate.cascade import prepare_cascade

            prepare_cascade(self, items)
            return
        ((mean, std),) = self.measure(items, [self.target_image])
        for net in self.networks().values():
            set_standardisation(net, mean, std)

    def measure(
        self, items: Any, targets: list[Callable[[dict[str, torch.Tensor]], torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per ``target(batch)``: the (3,) per-channel mean and standard deviation of what it
        makes of the training items (one item a batch; at most ``STANDARDISE_ITEMS``)."""
        n = len(items)
        picked = np.unique(np.linspace(0, n - 1, min(n, STANDARDISE_ITEMS)).round().astype(int))
        total = torch.zeros(len(targets), 3, dtype=torch.float64)
        squares = torch.zeros(len(targets), 3, dtype=torch.float64)
        count = torch.zeros(len(targets), dtype=torch.float64)
        for i in picked.tolist():
            image, mask = items.arrays(i, None)
            batch = {"image": to_model_range(image)[None].to(self.device)}
            if mask is not None:
                batch["mask"] = torch.from_numpy(mask.astype(np.int64))[None].to(self.device)
            for k, target in enumerate(targets):
                x = target(batch).double().cpu()
                total[k] += x.sum(dim=(0, 2, 3))
                squares[k] += (x * x).sum(dim=(0, 2, 3))
                count[k] += x.shape[0] * x.shape[2] * x.shape[3]
        if not count.all():
            raise InputError("no training image to measure the standardisation on")
        out = []
        for k in range(len(targets)):
            mean = total[k] / count[k]
            std = (squares[k] / count[k] - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
            out.append((mean.float(), std.float()))
        return out

    def diffusion_loss(
        self,
        unet: nn.Module,
        x0: torch.Tensor,
        gen: torch.Generator,
        condition: Callable[[], torch.Tensor | None] = lambda: None,
    ) -> torch.Tensor:
        """The DDPM loss of ``unet`` on clean images ``x0`` (standardised with ``unet``'s
        buffers when it has them); ``condition()`` (drawn after the noise and timesteps) is
        concatenated to its noisy input."""
        scale = standardisation(unet)
        if scale is not None:
            x0 = (x0 - scale[0].to(x0.dtype)) / scale[1].to(x0.dtype)
        b = x0.shape[0]
        noise = self.noise_like(tuple(x0.shape), gen).to(x0.dtype)
        t = torch.randint(
            0, self.model_cfg.num_train_timesteps, (b,), generator=gen, device=self.device
        )
        noisy = self.noise_schedule.add_noise(x0, noise, t)
        if self.model_cfg.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_schedule.get_velocity(x0, noise, t)
        cond = condition()
        if cond is not None:
            noisy = torch.cat([noisy, cond], dim=1)
        pred = unet(noisy, t).sample
        return F.mse_loss(pred.float(), target.float())

    def train_step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, Any]:
        cascade = self.model_cfg.cascade_size is not None
        if cascade:
            from groundsynth.generate.cascade import cascade_losses, update_cascade_ema

            loss, losses = cascade_losses(self, batch, gen)
        else:
            x0 = self.target_image(batch)
            loss = self.diffusion_loss(self.unet, x0, gen, lambda: self.condition(batch, gen))
            losses = {"loss": loss}
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if self.unet_ema is not None and cascade:
            update_cascade_ema(self)
        elif self.unet_ema is not None:
            update_ema(
                self.unet_ema, self.unet, ema_decay_at(self.model_cfg.ema_decay, self.steps_done)
            )
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def grid_rows(self, rows: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        """Per training sample: real | ``GRID_SAMPLES`` generated images."""
        net = self.unet_ema if self.unet_ema is not None else self.unet
        out = []
        for r, (image, _) in enumerate(rows):
            seeds = [derive_seed(self.config.seed, "grid", r, j) for j in range(GRID_SAMPLES)]
            fakes = to_uint8(sample_images(net, self.model_cfg, seeds, image.shape[0]))
            real = to_uint8(to_model_range(image)[None])[0]
            out.append(np.concatenate([real, *fakes], axis=1))
        return out
