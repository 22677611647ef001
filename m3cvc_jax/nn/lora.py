"""LoRA (Hu et al.) for any `nnx.Linear` of a module, with PEFT's maths and names.

`add_lora(model, targets, rank, alpha, key=...)` replaces every matching Linear in place by a
`LoRALinear`, which keeps the Linear's own `kernel`/`bias` (same variables, same paths: checkpoints,
fingerprints and `nnx.state(model, nnx.Param)` are unchanged) and adds

    y = x W + b + (alpha / rank) * (x A) B          A: (in, rank), B: (rank, out)

as PEFT's `lora_A`/`lora_B` (paths `...to_q.lora_A.kernel`: a PEFT key `...to_q.lora_A.weight` maps onto
it with the converters' usual Linear transpose). The factors are `LoRAWeight` variables, a type of their
own, so training selects exactly them (`nnx.split(model, LoRAWeight, ...)`) and two LoRAs are two states of
the same graph: `interpolate(s0, s1, w)` mixes A and B separately, as DiffMorpher does
(Δθ = w·Δθ_0 + (1-w)·Δθ_1 of CMVC eq. 6, applied to the factors). `merge`/`unmerge` fold the update into
the kernel and back.

targets follow PEFT's `target_modules`: a sequence of names matching a module path exactly or as a
dotted suffix (`"to_q"`, `"attn1.to_out.0"`), a regular expression matched against the whole path, or a
predicate on the dotted path. `ATTENTION_PROJECTIONS` is what diffusers' LoRA training and DiffMorpher
adapt: q, k, v and out of every self- and cross-attention.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.weights import path_key

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
INITS = ("gaussian", "kaiming")


class LoRAWeight(nnx.Variable):
    """A LoRA factor. Not an `nnx.Param`: base-model checkpoints and fingerprints never include it."""


class LoRAFactor(nnx.Module):
    """PEFT's bias-free `lora_A` / `lora_B` Linear: `kernel` (in, out)."""

    def __init__(self, kernel: jax.Array):
        self.kernel = LoRAWeight(kernel)


def initial_a(key: jax.Array, in_features: int, rank: int, init: str = "gaussian") -> jax.Array:
    """A fresh `lora_A` kernel `(in, rank)` in float32 (B starts at zero)."""
    if init == "gaussian":
        return jax.random.normal(key, (in_features, rank), jnp.float32) / rank
    bound = 1.0 / in_features**0.5
    return jax.random.uniform(key, (in_features, rank), jnp.float32, -bound, bound)


class LoRALinear(nnx.Module):
    """A Linear plus a low-rank update scaled by alpha / rank (PEFT's `scaling`).

    init: "gaussian" draws A with std 1/rank (diffusers' LoRALinearLayer, which DiffMorpher trains);
    "kaiming" draws it uniform in ±1/sqrt(in) (PEFT's default). B starts at zero either way, so a fresh
    LoRA changes nothing. dtype/param_dtype default to the wrapped Linear's.
    """

    def __init__(self, base: nnx.Linear, rank: int, alpha: float | None = None, *, key: jax.Array,
                 init: str = "gaussian", dtype=None, param_dtype=None):
        if int(rank) != rank or rank < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {rank}")
        if init not in INITS:
            raise ConfigError(f"LoRA init must be one of {', '.join(INITS)}, got {init!r}")
        alpha = float(rank if alpha is None else alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ConfigError(f"LoRA alpha must be positive and finite, got {alpha}")
        # The Linear's own variables and settings: nnx.Linear.__call__ below reads exactly these.
        self.kernel, self.bias = base.kernel, base.bias
        self.in_features, self.out_features, self.use_bias = base.in_features, base.out_features, base.use_bias
        self.dtype, self.precision = base.dtype if dtype is None else dtype, base.precision
        self.dot_general, self.promote_dtype = base.dot_general, base.promote_dtype
        self.preferred_element_type = base.preferred_element_type
        self.param_dtype = base.param_dtype if param_dtype is None else param_dtype
        self.rank, self.alpha, self.scaling = int(rank), alpha, alpha / int(rank)
        self.lora_A = LoRAFactor(initial_a(key, self.in_features, self.rank, init).astype(self.param_dtype))
        self.lora_B = LoRAFactor(jnp.zeros((self.rank, self.out_features), self.param_dtype))
        self.merged = False

    def delta(self) -> jax.Array:
        """The kernel update scaling · A B, `(in, out)`, in float32."""
        a = self.lora_A.kernel[...].astype(jnp.float32)
        b = self.lora_B.kernel[...].astype(jnp.float32)
        return self.scaling * (a @ b)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.Linear.__call__(self, x)  # the base layer, bit for bit as nnx.Linear computes it
        if self.merged:
            return y
        a = self.lora_A.kernel[...].astype(self.dtype or x.dtype)
        b = self.lora_B.kernel[...].astype(self.dtype or x.dtype)
        h = x.astype(a.dtype) @ a
        return y + (h @ b) * jnp.asarray(self.scaling, y.dtype)


Targets = Sequence[str] | str | Callable[[str], bool]


def _matcher(targets: Targets) -> Callable[[str], bool]:
    if callable(targets):
        return targets
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return lambda path: pattern.fullmatch(path) is not None
    names = tuple(targets)
    if not names:
        raise ConfigError("LoRA targets are empty")
    return lambda path: any(path == n or path.endswith("." + n) for n in names)


def linear_paths(model: nnx.Module, targets: Targets = ATTENTION_PROJECTIONS) -> list[str]:
    """Dotted paths of the Linears (plain or already LoRA-wrapped) of `model` that `targets` selects."""
    match = _matcher(targets)
    return sorted(path_key(p) for p, node in nnx.iter_graph(model)
                  if isinstance(node, (nnx.Linear, LoRALinear)) and p and match(path_key(p)))


def _walk(model: nnx.Module, parts: Sequence[str]):
    node = model
    for part in parts:
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _replace(model: nnx.Module, path: str, new: nnx.Module) -> None:
    *head, last = path.split(".")
    parent = _walk(model, head)
    if last.isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)


def _per_layer(value, path: str, name: str):
    if isinstance(value, Mapping):
        if path not in value:
            raise ConfigError(f"LoRA {name} not given for layer {path}")
        return value[path]
    return value


def add_lora(model: nnx.Module, targets: Targets = ATTENTION_PROJECTIONS, rank: int | Mapping[str, int] = 4,
             alpha: float | Mapping[str, float] | None = None, *, key: jax.Array, init: str = "gaussian",
             dtype=None, param_dtype=None) -> list[str]:
    """Wrap every Linear that `targets` selects in a `LoRALinear`, in place; returns their paths.

    rank/alpha: one value, or a mapping path -> value (converted LoRAs with per-layer ranks). Layer i of
    the sorted paths draws its A from `fold_in(key, i)`, so a key fixes the initial LoRA.
    """
    paths = linear_paths(model, targets)
    if not paths:
        raise ConfigError("LoRA targets match no Linear layer of the model")
    wrapped = [p for p in paths if isinstance(_walk(model, p.split(".")), LoRALinear)]
    if wrapped:
        raise ConfigError(f"layers already carry a LoRA: {', '.join(wrapped[:4])}")
    for i, path in enumerate(paths):
        base = _walk(model, path.split("."))
        _replace(model, path, LoRALinear(base, _per_layer(rank, path, "rank"), _per_layer(alpha, path, "alpha"),
                                         key=jax.random.fold_in(key, i), init=init, dtype=dtype,
                                         param_dtype=param_dtype))
    return paths


def lora_layers(model: nnx.Module) -> dict[str, LoRALinear]:
    return {path_key(p): node for p, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)}


def remove_lora(model: nnx.Module) -> None:
    """Put plain Linears back, in place: the update survives only where it was merged into the kernel."""
    for path, layer in lora_layers(model).items():
        base = nnx.eval_shape(lambda: nnx.Linear(layer.in_features, layer.out_features, use_bias=layer.use_bias,
                                                 dtype=layer.dtype, param_dtype=layer.param_dtype,
                                                 precision=layer.precision, rngs=nnx.Rngs(0)))
        base.kernel, base.bias = layer.kernel, layer.bias
        _replace(model, path, base)


def initial_state(model: nnx.Module, key: jax.Array, init: str = "gaussian") -> nnx.State:
    """Fresh factors for the model's LoRA layers (A drawn, B zero), as `add_lora(..., key=key)` draws them:
    a pure function of the key and the layer shapes, whatever factors the model holds now."""
    if init not in INITS:
        raise ConfigError(f"LoRA init must be one of {', '.join(INITS)}, got {init!r}")
    state = lora_state(model)
    layers = lora_layers(model)
    fresh = {}
    for i, (path, layer) in enumerate(sorted(layers.items())):
        a = initial_a(jax.random.fold_in(key, i), layer.in_features, layer.rank, init)
        fresh[f"{path}.lora_A.kernel"] = a.astype(layer.param_dtype)
        fresh[f"{path}.lora_B.kernel"] = jnp.zeros((layer.rank, layer.out_features), layer.param_dtype)
    flat = nnx.to_flat_state(jax.tree.map(lambda v: v, state))  # a copy: the model's factors stay as they are
    for p, var in flat:
        var.set_value(fresh[path_key(p)])
    return nnx.from_flat_state(flat)


def lora_state(model: nnx.Module) -> nnx.State:
    """The LoRA factors of `model` (every `LoRAWeight`), as an nnx.State."""
    return nnx.state(model, LoRAWeight)


def interpolate(state0: Any, state1: Any, w: float | jax.Array) -> Any:
    """w·state0 + (1 - w)·state1 for every factor: A and B mixed separately (CMVC eq. 6, DiffMorpher).

    Works on any pytrees of equal structure (LoRA states, flat dicts); differentiable in w."""
    def mix(a, b):
        wa = jnp.asarray(w, jnp.float32)
        return (wa * a.astype(jnp.float32) + (1 - wa) * b.astype(jnp.float32)).astype(a.dtype)

    return jax.tree.map(mix, state0, state1)


def merge(model: nnx.Module) -> None:
    """Fold scaling·A·B into each wrapped kernel (faster inference, same outputs); in place."""
    for layer in lora_layers(model).values():
        if not layer.merged:
            k = layer.kernel[...]
            layer.kernel.set_value((k.astype(jnp.float32) + layer.delta()).astype(k.dtype))
            layer.merged = True


def unmerge(model: nnx.Module) -> None:
    """Undo `merge` (exact up to the kernel dtype's rounding); in place."""
    for layer in lora_layers(model).values():
        if layer.merged:
            k = layer.kernel[...]
            layer.kernel.set_value((k.astype(jnp.float32) - layer.delta()).astype(k.dtype))
            layer.merged = False


def flat_lora(model: nnx.Module) -> dict[str, jax.Array]:
    """Factors as a flat dict `path.lora_A.kernel -> (in, rank)` (the converters' and checkpoints' form)."""
    return {path_key(p): v.get_value() for p, v in nnx.to_flat_state(lora_state(model))}


def set_lora(model: nnx.Module, params: Mapping[str, Any], *, source: str = "LoRA") -> None:
    """Copy a flat dict of factors (as `flat_lora` returns) into the model's LoRA layers, strictly."""
    flat = {path_key(p): v for p, v in nnx.to_flat_state(lora_state(model))}
    missing, unexpected = sorted(set(flat) - set(params)), sorted(set(params) - set(flat))
    bad = sorted(k for k in set(flat) & set(params) if tuple(jnp.shape(params[k])) != tuple(flat[k].shape))
    if missing or unexpected or bad:
        parts = [f"{len(v)} {n} ({', '.join(v[:6])})" for n, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad)) if v]
        raise WeightsError(f"{source} does not fit the model's LoRA layers: " + "; ".join(parts))
    for k, var in flat.items():
        var.set_value(jnp.asarray(params[k], var.get_value().dtype))


def layer_settings(model: nnx.Module) -> dict[str, dict[str, float]]:
    """{path: {"rank", "alpha"}} of every LoRA layer: what a LoRA checkpoint records to rebuild them."""
    return {p: {"rank": l.rank, "alpha": l.alpha} for p, l in lora_layers(model).items()}


def add_lora_layers(model: nnx.Module, layers: Mapping[str, Mapping[str, float]], *, key: jax.Array | None = None,
                    dtype=None, param_dtype=None) -> list[str]:
    """`add_lora` at exactly the paths of `layers` ({path: {"rank", "alpha"}}, as `layer_settings`)."""
    wanted = set(layers)
    found = set(linear_paths(model, lambda p: p in wanted))
    if found != wanted:
        raise ConfigError(f"LoRA layers not in the model: {', '.join(sorted(wanted - found)[:6])}")
    return add_lora(model, lambda p: p in wanted, {p: int(s["rank"]) for p, s in layers.items()},
                    {p: float(s["alpha"]) for p, s in layers.items()}, key=jax.random.key(0) if key is None else key,
                    dtype=dtype, param_dtype=param_dtype)
