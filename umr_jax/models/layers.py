"""Building blocks shared by the T5 and BERT families (Flax Linen).

Every parameter is created through `nn.with_logical_partitioning`, so it carries logical axis
names (`embed`, `mlp`, `heads`, `kv`, `vocab`, ...). The mapping of those names to mesh axes
lives in config (see `umr_jax.parallel.sharding`); model code never names a mesh axis.

Numerics: parameters are stored in `param_dtype` (fp32); matmuls run in `dtype` (bf16 in
production, fp32 in parity tests); normalisation statistics and softmax run in fp32.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any
Axes = tuple[str | None, ...]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    # Hugging Face "gelu" is the exact erf form, written as transformers writes it: XLA's erf is a
    # rational polynomial, cheaper than the erfc (with an exp) of jax.nn.gelu(approximate=False)
    # (fp32 [16384, 1024] on a 2-core Xeon: 31 vs 49 ms forward). "gelu_new" / "gelu_pytorch_tanh"
    # are the tanh form.
    "gelu": lambda x: 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0)))),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function Hugging Face calls `name`."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}") from None


def dtype_of(name: str | Dtype) -> Dtype:
    """`'bfloat16'` -> `jnp.bfloat16`; dtypes pass through."""
    return jnp.dtype(name) if isinstance(name, str) else name


def logical_init(init: Callable, axes: Axes) -> Callable:
    return nn.with_logical_partitioning(init, axes)


class Dense(nn.Module):
    """y = x . kernel (+ bias), contracting `axis` of x with the kernel's leading dims.

    The kernel is created directly in its final shape `[*contracted, *features]` with one
    logical name per dim (Flax's DenseGeneral initialises a flattened kernel, whose names then
    disagree with its rank under a mesh).
    """

    features: tuple[int, ...]
    axes: Axes
    axis: tuple[int, ...] = (-1,)
    use_bias: bool = False
    bias_axes: Axes | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        axis = tuple(a % x.ndim for a in self.axis)
        in_shape = tuple(x.shape[a] for a in axis)
        kernel = self.param(
            "kernel", logical_init(nn.initializers.normal(self.init_std), self.axes), in_shape + self.features, self.param_dtype
        )
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            ((axis, tuple(range(len(axis)))), ((), ())),
        )
        if self.use_bias:
            bias = self.param(
                "bias",
                logical_init(nn.initializers.zeros_init(), self.bias_axes or self.axes[-len(self.features):]),
                self.features,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


def dense(
    features: int | Sequence[int],
    axes: Axes,
    *,
    axis: int | Sequence[int] = -1,
    use_bias: bool = False,
    bias_axes: Axes | None = None,
    dtype: Dtype,
    param_dtype: Dtype,
    init_std: float = 0.02,
    name: str | None = None,
) -> Dense:
    """A Dense whose kernel (and bias) carry logical axis names.

    `axes` names every kernel dimension: contracted input dims first, then output dims.
    """
    return Dense(
        features=tuple(features) if isinstance(features, (tuple, list)) else (features,),
        axes=axes,
        axis=tuple(axis) if isinstance(axis, (tuple, list)) else (axis,),
        use_bias=use_bias,
        bias_axes=bias_axes,
        dtype=dtype,
        param_dtype=param_dtype,
        init_std=init_std,
        name=name,
    )


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias; statistics in fp32."""

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", logical_init(nn.initializers.ones_init(), ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
    """BERT's layer norm (mean and variance, scale and bias); statistics in fp32."""

    epsilon: float = 1e-12
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", logical_init(nn.initializers.ones_init(), ("embed",)), (features,), self.param_dtype)
        bias = self.param("bias", logical_init(nn.initializers.zeros_init(), ("embed",)), (features,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def embedding_table(module: nn.Module, name: str, num: int, features: int, axes: Axes, std: float, param_dtype: Dtype):
    """A `[num, features]` table parameter with logical axes, declared on `module`."""
    return module.param(name, logical_init(nn.initializers.normal(std), axes), (num, features), param_dtype)


# The additive bias of a hidden key. Large enough that exp() of a hidden score is exactly 0 in
# fp32 next to any visible one (as with Hugging Face's finfo.min), small enough that the sum of
# several masks (causal + padding + a relative-position bias) stays finite, so the scores need no
# clipping (a clip costs a select over [batch, heads, q, k] in the backward pass). A row with
# every key hidden (a padding query) gets uniform weights instead of NaN.
MASK_BIAS = -1e9


def attention_bias_from_mask(mask: jax.Array) -> jax.Array:
    """`[batch, k]` 0/1 key mask -> additive fp32 bias `[batch, 1, 1, k]` (0 or MASK_BIAS)."""
    return jnp.where(mask[:, None, None, :] > 0, 0.0, MASK_BIAS).astype(jnp.float32)


def causal_bias(length: int) -> jax.Array:
    """Additive fp32 bias `[1, 1, length, length]` that hides future positions."""
    allowed = jnp.tril(jnp.ones((length, length), dtype=bool))
    return jnp.where(allowed, 0.0, MASK_BIAS)[None, None].astype(jnp.float32)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array,
    *,
    scale: float,
    dropout_rate: float,
    deterministic: bool,
    module: nn.Module,
) -> jax.Array:
    """Multi-head attention core.

    query [batch, q, heads, kv], key/value [batch, k, heads, kv], bias broadcastable to
    [batch, heads, q, k] (fp32, additive). Scores and softmax run in fp32; the weighted sum
    runs in the value dtype. Returns [batch, q, heads, kv].

    The heads are moved next to the batch first, so both products are plain batched matmuls
    over (batch, heads): XLA:CPU runs the einsums on the [batch, len, heads, kv] layout
    ("bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd") 3-5x slower (measured 2026-12-01 on a 2-core Xeon,
    fp32 forward: [256, 96, 4, 16] 132 -> 29 ms, [16, 256, 8, 32] 128 -> 24 ms); on GPU/TPU
    layout assignment makes the two forms the same program.

    The softmax is normalised after the weighted sum, as FlashAttention does: the weights are
    exp(s - max s) (each row's largest is exactly 1, so the row sum is >= 1), the product with
    the values is taken unnormalised and then divided by the row sums. That divides [.., q, kv]
    instead of [.., q, k] and its backward needs no [.., q, k] normalised copy (a BERT-mini
    tower, [64, 256] fp32 on a 2-core Xeon, interleaved runs: forward 1.61-1.92 s against
    1.85-2.27 s, forward+backward 5.4-6.5 s against 5.8-7.0 s). Dropout on the unnormalised
    weights equals dropout on the normalised ones (the mask is elementwise, the sum per row).
    """
    query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))  # [batch, heads, len, kv]
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    if scale != 1.0:
        scores = scores * scale
    scores = scores + bias
    weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
    total = jnp.sum(weights, axis=-1, keepdims=True)
    if not deterministic and dropout_rate > 0.0:
        keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(value.dtype), value, preferred_element_type=jnp.float32)
    return (out / total).astype(value.dtype).transpose(0, 2, 1, 3)


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over non-padding positions: hidden [batch, length, embed], mask [batch, length] -> [batch, embed] (fp32)."""
    m = mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return summed / jnp.maximum(jnp.sum(m, axis=1), 1.0)


# ---------------------------------------------------------------------------------------------
# Layers scanned over depth (MaxText's `scan_layers`)
#
# A stack of identical layers is either unrolled (params `layers_0`, `layers_1`, ...) or one
# `nn.scan` over depth (params `layers`, each leaf with a leading [num_layers] axis, logical
# name "layers", which no rule set shards). Both compute the same function; the scanned one
# compiles one layer's program, so compile time does not grow with depth (mBERT-base's
# gradient-cached distillation step for a TPU: minutes unrolled, about a minute scanned).
# Hugging Face checkpoints hold unrolled layers: `stack_layers` / `unstack_layers` convert.

LAYER_AXIS = "layers"
_UNROLLED = re.compile(r"layers_(\d+)")


# What the backward pass keeps of each scanned layer (`remat` in the model configs):
#   "none"     everything the forward computed (XLA's default);
#   "minimal"  only the outputs of matmuls without batch dimensions (the projections and the
#              feed-forward); attention scores, softmax, dropout masks and activations are
#              recomputed. On a TPU this trades a few percent more FLOPs for much less HBM
#              traffic and memory (the [batch, heads, length, length] tensors are never stored);
#   "full"     nothing: each layer's forward runs again in the backward pass.
REMAT_POLICIES = {"none": None, "minimal": "dots_with_no_batch_dims_saveable", "full": "nothing_saveable"}


def scanned(layer_cls: type[nn.Module], length: int, broadcast_args: int, remat: str = "none") -> type[nn.Module]:
    """`layer_cls` scanned `length` times over its first argument (the carried hidden states);
    its other `broadcast_args` positional arguments are the same for every layer (the last is
    the static `deterministic` flag). The layer returns the new hidden states; each layer draws
    its own params and dropout masks. `remat`: what the backward pass keeps (REMAT_POLICIES)."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")

    class Carry(layer_cls):  # type: ignore[misc, valid-type]
        def __call__(self, x, *args, **kwargs):
            return super().__call__(x, *args, **kwargs), None

    Carry.__name__ = Carry.__qualname__ = f"Scanned{layer_cls.__name__}"
    body = Carry
    if REMAT_POLICIES[remat] is not None:
        policy = getattr(jax.checkpoint_policies, REMAT_POLICIES[remat])
        # The static `deterministic` flag: argument 1 + broadcast_args (0 is the module, 1 the carry).
        body = nn.remat(Carry, policy=policy, prevent_cse=False, static_argnums=(1 + broadcast_args,))
    return nn.scan(
        body,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * broadcast_args,
        length=length,
        metadata_params={nn.PARTITION_NAME: LAYER_AXIS},
    )


def stack_layers(tree: dict) -> dict:
    """Unrolled params (`layers_{i}` subtrees) -> scanned params (`layers`, leaves stacked on
    a new leading axis), at every level of `tree`. Numpy in, numpy out."""
    import numpy as np

    if not isinstance(tree, dict):
        return tree
    out, unrolled = {}, {}
    for key, value in tree.items():
        match = _UNROLLED.fullmatch(key)
        if match:
            unrolled[int(match.group(1))] = value
        else:
            out[key] = stack_layers(value)
    if unrolled:
        if sorted(unrolled) != list(range(len(unrolled))):
            raise ValueError(f"layers are not numbered 0..{len(unrolled) - 1}: {sorted(unrolled)}")
        layers = [unrolled[i] for i in range(len(unrolled))]
        out[LAYER_AXIS] = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
    return out


def unstack_layers(tree: dict) -> dict:
    """The inverse of `stack_layers`: `layers` subtrees -> `layers_{i}`."""
    import numpy as np

    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if key == LAYER_AXIS and isinstance(value, dict):
            leaves = jax.tree_util.tree_leaves(value)
            for i in range(int(np.shape(leaves[0])[0])):
                out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], value)
        else:
            out[key] = unstack_layers(value)
    return out
