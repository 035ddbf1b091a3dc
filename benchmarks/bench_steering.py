"""Which gradient estimate steers the camera mixture best per CPU second?

    python benchmarks/bench_steering.py [--updates 10] [--samples 8] [--size 32] [--threads 1] [--seed 0]

A PoseNet pre-trained on factory-prior renders of the embedded default backbone is frozen; a camera
mixture (core.steering.distribution, started at the prior) is trained to maximise its pose error
with the same number of rendered views per update by three estimates of d loss / d parameters:
  score       score-function (REINFORCE, batch-mean baseline, spread-scaled advantages): what
              core.steering uses;
  es          antithetic evolution strategies on the mixture's parameter vector (sigma 0.1),
              each +- pair scored on the same draws (common random numbers);
  pathwise    reparameterised draws rendered *with gradients* through the differentiable
              tri-plane renderer (plain render: the CPU culling path keeps no graph).
Identities are fixed (two seeds, synthesised once), so only cameras are steered and compared.
Prints, per estimate, the expected model loss (mean of 32 fixed-noise draws) before and after,
the CPU seconds spent, and the gain in degrees of pose error per CPU second. Not a test.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import load_backbone  # noqa: E402
from core.factory.views import expand_identity  # noqa: E402
from core.generator.culling import render_with_samples, skipping_grid  # noqa: E402
from core.semantic.rendering import neural_resolution_for  # noqa: E402
from core.steering.distribution import Mixture  # noqa: E402
from core.steering.models import TrainSettings, new_model, train_steps  # noqa: E402

BOUNDS = {"yaw": (-90.0, 90.0), "pitch": (-40.0, 40.0)}
SEEDS = (2_000_123, 2_000_456)


# tests/test_benchmarks.py runs this at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--updates", "1", "--samples", "4", "--size", "16"], r"pathwise.*deg per CPU s")]


def torch_camera_labels(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, radius: float, pivot, fov_label) -> torch.Tensor:
    """core.camera's look-at labels (N, 25), differentiable in yaw and pitch (same convention)."""
    azimuth = math.pi / 2 + torch.deg2rad(yaw_deg)
    polar = (math.pi / 2 + torch.deg2rad(pitch_deg)).clamp(1e-5, math.pi - 1e-5)
    phi = torch.acos(1.0 - 2.0 * polar / math.pi)
    position = radius * torch.stack([torch.sin(phi) * torch.cos(math.pi - azimuth), torch.cos(phi),
                                     torch.sin(phi) * torch.sin(math.pi - azimuth)], 1)
    forward = torch.nn.functional.normalize(torch.as_tensor(pivot, dtype=position.dtype)[None] - position, dim=1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=1), dim=1)
    down = torch.nn.functional.normalize(torch.cross(forward, right, dim=1), dim=1)
    pose = torch.zeros(len(yaw_deg), 4, 4, dtype=position.dtype)
    pose[:, :3, :3] = torch.stack([right, down, forward], 2)
    pose[:, :3, 3] = position
    pose[:, 3, 3] = 1
    return torch.cat([pose.reshape(-1, 16).float(), fov_label.expand(len(yaw_deg), -1)], 1)


class Setting:
    def __init__(self, size: int, seed: int):
        self.backbone = load_backbone("default")
        self.generator = self.backbone.generator
        self.size = size
        self.resolution = neural_resolution_for(self.generator, size)
        self.identities = [self.backbone.identity_from_seed(s) for s in SEEDS]
        self.grids = [skipping_grid(self.generator, i) for i in self.identities]
        camera = self.backbone.camera(0, 0)
        self.radius, self.pivot = camera.radius, camera.pivot
        self.fov_label = camera.label()[16:][None]
        self.model = self._pretrained(seed)

    def _pretrained(self, seed: int):
        rng = np.random.default_rng(seed)
        angles = np.stack([rng.uniform(-45, 45, 64), rng.uniform(-20, 20, 64)], 1)
        images = np.concatenate([self.render(torch.from_numpy(angles[i::2]).float(), i) for i in range(2)])
        targets = np.concatenate([angles[0::2], angles[1::2]]).astype(np.float32)
        model = new_model("pose", self.size, width=8, seed=seed)
        train_steps(model, images, targets, TrainSettings(200, 16, 2e-3, seed))
        for parameter in model.module.parameters():
            parameter.requires_grad_(False)
        return model

    @torch.no_grad()
    def render(self, angles: torch.Tensor, which: int) -> np.ndarray:
        labels = torch.stack([self.backbone.camera(float(y), float(p)).label() for y, p in angles])
        view = render_with_samples(self.generator, expand_identity(self.identities[which], len(labels)), labels,
                                   self.resolution, self.grids[which])
        image = torch.nn.functional.interpolate(view.image, size=(self.size, self.size), mode="area")
        return ((image.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255)).to(torch.uint8).numpy()

    def losses(self, angles: torch.Tensor) -> torch.Tensor:
        """(n,) pose error (degrees) of views alternating between the two identities (no gradient)."""
        images = np.zeros((len(angles), self.size, self.size, 3), np.uint8)
        for which in range(2):
            images[which::2] = self.render(angles[which::2], which)
        batch = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)
        with torch.no_grad():
            return self.model.sample_losses(batch, angles.float()).double()

    def losses_with_gradient(self, angles: torch.Tensor) -> torch.Tensor:
        """The same losses, differentiable in `angles` through the renderer."""
        out = []
        for which in range(2):
            own = angles[which::2]
            labels = torch_camera_labels(own[:, 0], own[:, 1], self.radius, self.pivot, self.fov_label)
            view = self.generator.render(expand_identity(self.identities[which], len(own)), labels, self.resolution)
            image = torch.nn.functional.interpolate(view.image, size=(self.size, self.size), mode="area")
            out.append(self.model.sample_losses((image * 0.5 + 0.5).clamp(0, 1), own.float()))
        return torch.cat(out)


def expected_loss(setting: Setting, mixture: Mixture) -> float:
    generator = torch.Generator().manual_seed(12345)  # the same noise for every estimate
    return float(setting.losses(mixture.physical(mixture.sample(32, generator)).float()).mean())


def flat(mixture: Mixture) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in mixture.parameters()])


def assign(mixture: Mixture, vector: torch.Tensor) -> None:
    with torch.no_grad():
        first = 0
        for p in mixture.parameters():
            p.copy_(vector[first:first + p.numel()].reshape(p.shape))
            first += p.numel()


def update(method: str, setting: Setting, mixture: Mixture, samples: int, generator, kl_weight: float = 0.05):
    if method == "score":
        x = mixture.sample(samples, generator)
        losses = setting.losses(mixture.physical(x).float())
        return mixture.surrogate(x, losses.float(), kl_weight, generator)
    if method == "pathwise":
        component = torch.multinomial(torch.softmax(mixture.logits, 0), samples, True, generator=generator)
        noise = torch.randn(samples, 2, generator=generator)
        x = mixture.means[component] + mixture.log_stds.exp()[component] * noise
        values = mixture._mean.float() + x * mixture._std.float()
        values = torch.maximum(torch.minimum(values, mixture._high.float()), mixture._low.float())
        return -setting.losses_with_gradient(values).mean() + kl_weight * mixture.kl_to_prior(generator)
    # es: antithetic pairs, each pair's two parameter vectors scored on the same base draws
    base, sigma, pairs = flat(mixture), 0.1, max(1, samples // 4)
    estimate = torch.zeros_like(base)
    for _ in range(pairs):
        epsilon = torch.randn(base.shape, generator=generator)
        state = generator.get_state()
        scores = []
        for sign in (1, -1):
            assign(mixture, base + sign * sigma * epsilon)
            generator.set_state(state)
            scores.append(float(setting.losses(mixture.physical(mixture.sample(2, generator)).float()).mean()))
        estimate += (scores[0] - scores[1]) / (2 * sigma) * epsilon / pairs
    assign(mixture, base)
    scale = estimate.norm().clamp_min(1e-8)  # a step of fixed length along the estimate (Adam rescales anyway)
    return -(torch.cat([p.reshape(-1) for p in mixture.parameters()]) * (estimate / scale)).sum() \
        + kl_weight * mixture.kl_to_prior(generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8, help="rendered views per update (all estimates)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="score,es,pathwise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = Setting(args.size, args.seed)
    print(f"default backbone, PoseNet pre-trained on prior renders, {args.updates} updates x {args.samples} views, "
          f"{args.size}px, {args.threads} thread(s)")
    for method in args.methods.split(","):
        mixture = Mixture(("yaw", "pitch"), BOUNDS, components=2, seed=args.seed)
        optimizer = torch.optim.Adam(mixture.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(args.seed)
        before = expected_loss(setting, mixture)
        started = time.process_time()
        for _ in range(args.updates):
            surrogate = update(method, setting, mixture, args.samples, generator)
            optimizer.zero_grad()
            surrogate.backward()
            optimizer.step()
        seconds = time.process_time() - started
        after = expected_loss(setting, mixture)
        means = mixture.physical(mixture.means.detach()).numpy().round(1).tolist()
        print(f"{method:9s} loss {before:6.2f} -> {after:6.2f} deg  cpu {seconds:6.1f} s  "
              f"gain {(after - before) / seconds:+.3f} deg per CPU s  means (yaw, pitch) {means}")


if __name__ == "__main__":
    main()
