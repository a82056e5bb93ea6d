"""Site-shift augmentation: another microscope's optics, stain and camera, imitated on training crops.

A CNN trained on one site's images learns that site's blur, probe brightness, background and
noise as if they were biology, and collapses on a second scanner. Field standardisation
(:mod:`ctcid.intensity`) removes the first-order differences (exposure, background, stain
strength); this module shows the network what is left, on the fly and on the standardised scale
(background ~0, a typical cell ~1 per channel), in the order the light takes in
:mod:`ctcid.raw.simulate.optics`: bleed-through, channel gain and offset, blur, channel
misregistration, then camera noise. Each crop is shifted with probability ``SiteShift.prob`` and
draws its own values, all from one ``torch.Generator`` (reproducible). Every step works on the
whole batch at once (one depthwise convolution, one ``grid_sample``); no per-crop Python loop, and
no step whose shape depends on a draw: every crop is shifted and the chosen ones kept, so on a GPU
nothing waits for the host (a boolean index or a ``.max()`` read back would).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ctcid.config.train import SiteShift

# params.channels' default order; callers pass params.channels.
DEFAULT_CHANNELS: tuple[str, ...] = ("DAPI", "CEP8", "CD45")
# FitOptions built by hand (tests, benches) shift nothing unless asked to.
NO_SITE_SHIFT = SiteShift(prob=0.0)


def site_shift(
    images: Tensor, generator: torch.Generator, shift: SiteShift, channels: Sequence[str]
) -> Tensor:
    """``N x C x H x W`` standardised crops, each shifted to another site with probability ``shift.prob``.

    ``channels`` names the stain of each channel (``params.channels``). Crops not chosen come back
    bit for bit unchanged; the result is a new tensor when ``shift.prob`` is above 0.
    """
    dapi, cep8, cd45 = _indices(channels, images.shape[1])
    if shift.prob <= 0:  # draws nothing: the generator goes on as without a site shift
        return images
    chosen = (draw(generator, (images.shape[0],), images) < shift.prob).view(-1, 1, 1, 1)
    x = _bleed_through(images, generator, shift.bleed_through, dapi, cep8, cd45)
    x = _stain_and_background(x, generator, shift, cep8)
    x = _blur(x, generator, shift.blur_sigma)
    x = _misregister(x, generator, shift.misregistration_px, (cep8, cd45))
    x = _camera_noise(x, generator, shift.read_noise, shift.shot_noise)
    return torch.where(chosen, x, images)


def _indices(channels: Sequence[str], n_channels: int) -> tuple[int, int, int]:
    names = list(channels)
    if sorted(names) != sorted(DEFAULT_CHANNELS) or len(names) != n_channels:
        raise ValueError(f"channels must name the {n_channels} channels DAPI, CEP8 and CD45, got {names}")
    return names.index("DAPI"), names.index("CEP8"), names.index("CD45")


def draw(generator: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Uniform [0, 1) numbers from ``generator`` (on its device), as ``like``'s dtype and device.

    Augmentation (:func:`ctcid.model.dataset.augment`) draws with it too: one generator, any device.
    """
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def _uniform(
    generator: torch.Generator, bounds: tuple[float, float], shape: tuple[int, ...], like: Tensor
) -> Tensor:
    low, high = bounds
    return low + (high - low) * draw(generator, shape, like)


def _bleed_through(
    x: Tensor, generator: torch.Generator, bounds: tuple[float, float], dapi: int, cep8: int, cd45: int
) -> Tensor:
    """Emission tails leak into the next filter set towards the red; another site's filters leak more."""
    leak = _uniform(generator, bounds, (len(x), 2, 1, 1), x)
    out = x.clone()
    out[:, cep8] += leak[:, 0] * x[:, dapi]
    out[:, cd45] += leak[:, 1] * x[:, cep8]
    return out


def _stain_and_background(x: Tensor, generator: torch.Generator, shift: SiteShift, cep8: int) -> Tensor:
    """A weaker CEP8 probe (or a dimmer CEP8 exposure) and a background standardisation left over.

    Standardisation takes out a field's typical level, not a dimmer probe on the same cells, nor
    the few hundredths of background its median misses on a field with different autofluorescence.
    """
    n, c = x.shape[:2]
    gain = torch.ones((n, c, 1, 1), dtype=x.dtype, device=x.device)
    gain[:, cep8] = _uniform(generator, shift.spot_dimming, (n, 1, 1), x)
    offset = _uniform(generator, (-shift.offset, shift.offset), (n, c, 1, 1), x)
    return x * gain + offset


def _blur(x: Tensor, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
    """Another objective, focus or pixel size: an extra Gaussian blur of per-crop sigma (0 = none).

    One depthwise convolution (a kernel per crop and channel, radius ceil(3 x the largest sigma
    allowed: fixed, so no draw is read back); edges repeat the crop's border, which is background.
    """
    n, c, h, w = x.shape
    sigma = _uniform(generator, bounds, (n,), x)
    radius = math.ceil(3.0 * max(bounds))
    if radius == 0:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    # sigma -> 0 gives exp(-inf) off centre and exp(0) at it: the identity kernel, exactly
    line = torch.exp(-(taps**2) / (2.0 * sigma.clamp_min(1e-6)[:, None] ** 2))
    line = line / line.sum(dim=1, keepdim=True)
    kernel = (line[:, :, None] * line[:, None, :]).repeat_interleave(c, dim=0).unsqueeze(1)
    padded = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=n * c).reshape(n, c, h, w)


def _misregister(x: Tensor, generator: torch.Generator, most_px: float, moved: tuple[int, int]) -> Tensor:
    """Filter cubes that do not align: CEP8 and CD45 shifted sub-pixel against DAPI (DAPI stays put).

    Each moved channel of each crop draws a shift uniform over the disc of radius ``most_px``, as
    the simulator's microscope does; bilinear resampling, edges repeat the border (background).
    """
    if most_px <= 0:
        return x
    n, _, h, w = x.shape
    k = len(moved)
    radius = most_px * draw(generator, (n * k,), x).sqrt()
    angle = 2.0 * math.pi * draw(generator, (n * k,), x)
    theta = torch.zeros((n * k, 2, 3), dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # content moves by +dx px when each output pixel samples dx px to its left: -2 dx / W normalised
    theta[:, 0, 2] = -2.0 * radius * torch.cos(angle) / w
    theta[:, 1, 2] = -2.0 * radius * torch.sin(angle) / h
    channels = list(moved)
    planes = x[:, channels].reshape(n * k, 1, h, w)
    grid = F.affine_grid(theta, [n * k, 1, h, w], align_corners=False)
    shifted = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = x.clone()
    out[:, channels] = shifted.reshape(n, k, h, w)
    return out


def _camera_noise(
    x: Tensor, generator: torch.Generator, read: tuple[float, float], shot: tuple[float, float]
) -> Tensor:
    """A noisier camera: Gaussian read noise plus shot noise whose variance grows with the signal.

    Read noise is per crop; the shot factor per crop and channel, because one camera gain divided
    by each channel's own field scale is a different factor on the standardised scale.
    """
    n, c = x.shape[:2]
    read_sd = _uniform(generator, read, (n, 1, 1, 1), x)
    shot_factor = _uniform(generator, shot, (n, c, 1, 1), x)
    sd = torch.sqrt(read_sd**2 + shot_factor * x.clamp_min(0.0))
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return x + sd * noise.to(x.device)
