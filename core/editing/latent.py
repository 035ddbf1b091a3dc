"""The latent being optimised: w+ (one w per synthesis layer) or a single w shared by all layers,
stored as an offset from the backbone's average w in units of the spread of w, so that one
learning rate suits every backbone."""
from __future__ import annotations

import torch

W_SAMPLES = 512  # z samples for the spread of w (and w_avg when the backbone has none)


@torch.no_grad()
def w_statistics(G, samples: int = W_SAMPLES, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(w_avg (w_dim,), scalar RMS distance of w from it) of the mapping network."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=generator)
    c = G.frontal_camera_label()[None].expand(samples, -1)
    device = next(G.parameters()).device
    w = G.mapping(z.to(device), c.to(device))[:, 0]
    w_avg = getattr(G.backbone.mapping, "w_avg", None)
    if w_avg is None or not torch.any(w_avg != 0):
        w_avg = w.mean(0)
    spread = float((w - w_avg).pow(2).sum(1).mean().sqrt()) / w.shape[1] ** 0.5
    return w_avg.detach().clone(), max(spread, 1e-6)


@torch.no_grad()
def random_ws(G, seed: int) -> torch.Tensor:
    """ws (1, num_ws, w_dim) of a random z (a start for inversion besides w_avg)."""
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
    device = next(G.parameters()).device
    return G.mapping(z.to(device), G.frontal_camera_label()[None].to(device))


class Latent(torch.nn.Module):
    """ws = w_avg + spread · offset; `space` 'w+' (per layer) or 'w' (one offset for all layers)."""

    def __init__(self, start_ws: torch.Tensor, w_avg: torch.Tensor, spread: float, space: str = "w+"):
        super().__init__()
        if space not in ("w", "w+"):
            raise ValueError(f"latent space must be 'w' or 'w+', not {space!r}")
        if start_ws.ndim != 3 or start_ws.shape[0] != 1:
            raise ValueError(f"a start latent has shape (1, num_ws, w_dim), got {tuple(start_ws.shape)}")
        self.space = space
        self.num_ws = start_ws.shape[1]
        self.register_buffer("w_avg", w_avg.reshape(1, 1, -1).detach().clone())
        self.spread = float(spread)
        offset = (start_ws.detach() - self.w_avg) / self.spread
        if space == "w":
            offset = offset.mean(1, keepdim=True)
        self.offset = torch.nn.Parameter(offset.clone())

    def ws(self) -> torch.Tensor:
        return self.w_avg + self.spread * self.offset.expand(-1, self.num_ws, -1)
