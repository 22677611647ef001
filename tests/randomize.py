"""The one way parity tests randomise a torch reference, and the check that nothing was left at its init.

Reference libraries start biases at zero, norm scales at one, some output projections at zero and batch-norm
statistics at (0, 1): a converter that drops, swaps or mis-maps any of those tensors would still pass a
parity test on a freshly built model. `randomize_all` redraws every parameter and every buffer that acts as
one (batch-norm running statistics); `assert_no_init_constants` proves it happened.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

# Buffers that are learned state in all but name; every other buffer (position ids, rotary tables,
# normalisation constants of a package) is a definition and keeps its value.
_STAT_BUFFERS = ("running_mean", "running_var")


def randomize_all(module, seed: int = 0) -> None:
    """Overwrite every parameter and batch-norm statistic of a torch module with seeded values of a sane
    scale: matrices and kernels N(0, 1/fan_in), 1-D weights (norm scales) 1 + N(0, 0.2^2), biases and
    other vectors N(0, 0.2^2), scalars their value + N(0, 0.2^2), running means N(0, 0.1^2), running
    variances U(0.5, 1.5)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            # scaled in place: a 151,936-token embedding is 0.93 GB, each temporary as much again
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            if p.ndim >= 2:
                p.copy_(noise.div_(np.sqrt(p[0].numel())))
            elif p.ndim == 1 and name.rpartition(".")[2] == "weight":
                p.copy_(noise.mul_(0.2).add_(1.0))
            elif p.ndim == 0:
                p.add_(noise.mul_(0.2))
            else:
                p.copy_(noise.mul_(0.2))
        for name, b in module.named_buffers():
            leaf = name.rpartition(".")[2]
            if leaf == "running_mean":
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif leaf == "running_var":
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def _tensors(source: Any) -> Iterable[tuple[str, np.ndarray]]:
    if isinstance(source, Mapping):
        for k, v in source.items():
            yield k, np.asarray(v)
        return
    for name, p in source.named_parameters():
        yield name, p.detach().float().cpu().numpy()
    for name, b in source.named_buffers():
        if name.rpartition(".")[2] in _STAT_BUFFERS:
            yield name, b.detach().float().cpu().numpy()


def assert_no_init_constants(source: Any, *, ignore: tuple[str, ...] = ()) -> int:
    """Fail if any parameter (or batch-norm statistic) of a torch module, or any tensor of a state dict,
    is constant (all zero, all one, or any single repeated value). Single-element tensors cannot show
    it and are skipped; keys ending with an `ignore` suffix are definitions, not weights.
    Returns how many tensors were checked, so a caller can assert the check saw something."""
    constant, checked = [], 0
    for name, value in _tensors(source):
        if value.size < 2 or name.endswith(ignore):
            continue
        checked += 1
        flat = value.reshape(-1)
        if np.all(flat == flat[0]):
            constant.append(f"{name}={flat[0]}")
    assert not constant, f"{len(constant)} tensors still at a constant init: {', '.join(constant[:10])}"
    assert checked, "nothing to check"
    return checked
