"""The steered distribution: Gaussian mixtures over camera and identity, inside hard bounds.

Two mixtures (VIAT's "mixture of adversarial viewpoints", extended to identities):
* camera: (yaw, pitch) in degrees, one draw per rendered view;
* identity: (psi, pc_1 .. pc_k), one draw per identity, which all its views share (an identity's
  synthesis and density grid are its expensive part, so identities are reused across views):
  w = w_avg + psi (w_seed - w_avg) + sum_j pc_j sigma_j v_j, v_j the leading principal
  directions of w and sigma_j their standard deviations (core.steering.render).

Each mixture lives in *normalised* coordinates x = (value - prior mean) / prior std, where the
prior is the factory's distribution as a Gaussian of the same mean and variance (yaw uniform in
+-45 has std 26 degrees, pitch in +-20 std 11.5, psi 1 +- 0.1, pc offsets N(0, 1)): the prior is
N(0, I) there and KL(q || prior) is measured against it. A draw is clamped into the request's
hard bounds *after* sampling (its density stays the unclamped one, so the score-function
estimate stays unbiased for the clamped objective).

Training (`Mixture.step`): maximise E_q[loss] - kl_weight * KL(q || prior). The loss term's
gradient is the score-function (REINFORCE) estimate with the batch mean as baseline and the
advantages scaled by their spread (a loss of any scale steers alike); the KL term is estimated
by reparameterised draws from each component (differentiable, no render needed).
benchmarks/bench_steering.py compares it with an antithetic evolution-strategy estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CAMERA_DIMS = ("yaw", "pitch")
PRIOR_MEAN = {"yaw": 0.0, "pitch": 0.0, "psi": 1.0}
PRIOR_STD = {"yaw": 90.0 / 12 ** 0.5, "pitch": 40.0 / 12 ** 0.5, "psi": 0.1}  # uniform +-45, +-20: same variance
KL_DRAWS = 64  # reparameterised draws per component for the KL estimate


def prior_of(name: str) -> tuple[float, float]:
    """(mean, std) of dimension `name` under the factory prior (pc_j: N(0, 1))."""
    return PRIOR_MEAN.get(name, 0.0), PRIOR_STD.get(name, 1.0)


class Mixture:
    """A K-component diagonal Gaussian mixture over named dimensions, in normalised coordinates."""

    def __init__(self, names, bounds: dict, components: int = 4, seed: int = 0, spread: float = 0.5):
        self.names = tuple(names)
        self.bounds = {name: (float(bounds[name][0]), float(bounds[name][1])) for name in self.names}
        generator = torch.Generator().manual_seed(int(seed))
        dims = len(self.names)
        self.logits = torch.zeros(components, requires_grad=True)
        self.means = (spread * torch.randn(components, dims, generator=generator)).requires_grad_(True)
        self.log_stds = torch.zeros(components, dims, requires_grad=True)
        self._mean = torch.tensor([prior_of(n)[0] for n in self.names], dtype=torch.float64)
        self._std = torch.tensor([prior_of(n)[1] for n in self.names], dtype=torch.float64)
        self._low = torch.tensor([self.bounds[n][0] for n in self.names], dtype=torch.float64)
        self._high = torch.tensor([self.bounds[n][1] for n in self.names], dtype=torch.float64)

    # -------------------------------------------------------------- parameters
    def parameters(self) -> list[torch.Tensor]:
        return [self.logits, self.means, self.log_stds]

    def to_json(self) -> dict:
        return {"names": list(self.names), "bounds": {n: list(b) for n, b in self.bounds.items()},
                "prior": {n: list(prior_of(n)) for n in self.names},
                "weights": torch.softmax(self.logits, 0).tolist(),
                "logits": self.logits.tolist(), "means": self.means.tolist(), "log_stds": self.log_stds.tolist(),
                "means_physical": self.physical(self.means.detach()).tolist(),
                "stds_physical": (self.log_stds.detach().exp().double() * self._std).tolist(),
                "kl_to_prior": float(self.kl_to_prior(torch.Generator().manual_seed(0)).detach())}

    def load_json(self, document: dict) -> "Mixture":
        if list(document["names"]) != list(self.names) or len(document["logits"]) != len(self.logits):
            raise ValueError(f"a stored mixture over {document['names']} does not fit one over {list(self.names)}")
        with torch.no_grad():
            self.logits.copy_(torch.tensor(document["logits"]))
            self.means.copy_(torch.tensor(document["means"]))
            self.log_stds.copy_(torch.tensor(document["log_stds"]))
        return self

    # -------------------------------------------------------------- density and draws
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) log density of normalised points (n, d)."""
        stds = self.log_stds.exp()
        z = (x[:, None, :] - self.means[None]) / stds[None]
        per_component = (-0.5 * z ** 2 - self.log_stds[None] - 0.5 * np.log(2 * np.pi)).sum(-1)
        return torch.logsumexp(per_component + torch.log_softmax(self.logits, 0)[None], 1)

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """(count, d) normalised draws (not clamped)."""
        with torch.no_grad():
            component = torch.multinomial(torch.softmax(self.logits, 0), count, True, generator=generator)
            noise = torch.randn(count, len(self.names), generator=generator)
            return self.means[component] + self.log_stds.exp()[component] * noise

    def physical(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (n, d) -> physical values, clamped into the hard bounds (float64)."""
        values = self._mean + x.double() * self._std
        return torch.maximum(torch.minimum(values, self._high), self._low)

    def normalised(self, values) -> torch.Tensor:
        return ((torch.as_tensor(values, dtype=torch.float64) - self._mean) / self._std).float()

    def kl_to_prior(self, generator: torch.Generator) -> torch.Tensor:
        """Monte-Carlo KL(q || N(0, I)), reparameterised per component (differentiable)."""
        stds = self.log_stds.exp()
        noise = torch.randn(KL_DRAWS, *self.means.shape, generator=generator)
        draws = (self.means[None] + stds[None] * noise).reshape(-1, len(self.names))
        log_q = self.log_prob(draws).reshape(KL_DRAWS, -1)
        log_p = (-0.5 * draws ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1).reshape(KL_DRAWS, -1)
        return ((log_q - log_p).mean(0) * torch.softmax(self.logits, 0)).sum()

    # -------------------------------------------------------------- training
    def surrogate(self, x: torch.Tensor, losses: torch.Tensor, kl_weight: float, generator: torch.Generator):
        """A scalar whose gradient is minus the objective's estimate (minimise it)."""
        advantages = losses - losses.mean()
        advantages = advantages / advantages.std().clamp_min(1e-8) if len(losses) > 1 else advantages * 0
        score = (advantages.detach() * self.log_prob(x)).mean()
        return -score + kl_weight * self.kl_to_prior(generator)


@dataclass
class Draws:
    """One steering batch: normalised identity draws (I, di), camera draws (I * V, dc)."""

    identity: torch.Tensor
    camera: torch.Tensor


class SteeredDistribution:
    """The camera mixture and the identity mixture of one steering run, trained together."""

    def __init__(self, bounds: dict, principal: int, components: int, seed: int):
        identity_names = ("psi",) + tuple(f"pc{j + 1}" for j in range(principal))
        self.camera = Mixture(CAMERA_DIMS, bounds, components, seed)
        self.identity = Mixture(identity_names, bounds, components, seed + 1)

    def mixtures(self) -> tuple[Mixture, Mixture]:
        return self.camera, self.identity

    def to_json(self) -> dict:
        return {"camera": self.camera.to_json(), "identity": self.identity.to_json()}

    def load_json(self, document: dict) -> "SteeredDistribution":
        self.camera.load_json(document["camera"])
        self.identity.load_json(document["identity"])
        return self

    def draw(self, identities: int, views: int, generator: torch.Generator) -> Draws:
        return Draws(self.identity.sample(identities, generator), self.camera.sample(identities * views, generator))

    def prior_draw(self, identities: int, views: int, generator: torch.Generator) -> Draws:
        """The factory's own distribution: yaw, pitch uniform in +-45, +-20; psi 1; no pc offset."""
        yaw = torch.rand(identities * views, generator=generator, dtype=torch.float64) * 90 - 45
        pitch = torch.rand(identities * views, generator=generator, dtype=torch.float64) * 40 - 20
        camera = self.camera.normalised(torch.stack([yaw, pitch], 1))
        identity = self.identity.normalised(torch.tensor([[1.0] + [0.0] * (len(self.identity.names) - 1)]))
        return Draws(identity.expand(identities, -1).clone(), camera)

    def surrogate(self, draws: Draws, losses: torch.Tensor, views: int, kl_weight: float, generator) -> torch.Tensor:
        """losses: (I * V,) per view; an identity's reward is the mean over its views."""
        per_identity = losses.reshape(-1, views).mean(1)
        return (self.camera.surrogate(draws.camera, losses, kl_weight, generator)
                + self.identity.surrogate(draws.identity, per_identity, kl_weight, generator))
