"""Train state born sharded, the optimizer, and the one jitted step per trainer.

The step is a pure function of global arrays (`loss_fn(params, batch, rng)`); it is jitted
with explicit `in_shardings`/`out_shardings` and donates the old state, so XLA inserts the
collectives and reuses the state's memory. No pmap.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax
import flax.linen as nn
import optax
from jax.sharding import Mesh

from umr_jax.parallel import sharding as shd


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def scale_by_adam_eps_before_bias_correction(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam's direction as `transformers.AdamW` (the released UMR/DPR optimizer) computes it: eps
    is added to sqrt(v) before the bias correction, `sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) +
    eps)`, which is optax's `m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t))`: eps is 31.6x larger at
    step 1 and tends to optax's own. The state is optax's `ScaleByAdamState`, so checkpoints have
    the same tree either way."""

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros((), jnp.int32), mu=zeros, nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
        count = optax.safe_int32_increment(state.count)
        t = count.astype(jnp.float32)
        step_scale = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        out = jax.tree_util.tree_map(lambda m, v: step_scale * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    learning_rate: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    b1: float = 0.9,
    b2: float = 0.999,
    grad_clip_norm: float | None = None,
    eps_before_bias_correction: bool = False,
) -> optax.GradientTransformation:
    """AdamW with linear warm-up then linear decay to 0 (the UMR/DPR schedule: the learning rate of
    update k, counted from 0, is `lr * k / warmup` during warm-up, then `lr * (total - k) / (total -
    warmup)`), with optional global-norm gradient clipping applied first, in fp32 on the gradient
    the loss gives (a run that scales its gradient before clipping, as the released UMR code does,
    is matched by scaling the threshold: configs/umr_xor_retrieve.py). `eps_before_bias_correction`:
    eps as `transformers.AdamW` places it (`scale_by_adam_eps_before_bias_correction`)."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
            optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1)),
        ],
        [warmup_steps],
    )
    parts = []
    if grad_clip_norm:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    if eps_before_bias_correction:
        parts += [scale_by_adam_eps_before_bias_correction(b1, b2, eps), optax.add_decayed_weights(weight_decay),
                  optax.scale_by_learning_rate(schedule)]
    else:
        parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)


def create_train_state(
    init_params: Callable[[], Any], optimizer: optax.GradientTransformation, mesh: Mesh, rules: shd.Rules | str
) -> tuple[TrainState, TrainState]:
    """A TrainState whose params and optimizer moments are created already sharded.

    `init_params()` returns boxed (logically partitioned) params, e.g.
    `lambda: module.init(rng, *example)["params"]`. The optimizer moments inherit the params'
    logical axes. Returns (state, state_shardings).
    """

    def init_boxed() -> TrainState:
        params = init_params()
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    abstract = jax.eval_shape(init_boxed)
    shardings = shd.logical_shardings(abstract, mesh, rules)
    state = jax.jit(lambda: nn.meta.unbox(init_boxed()), out_shardings=shardings)()
    return state, shardings


def state_from_params(
    params: Any, boxed_abstract_params: Any, optimizer: optax.GradientTransformation, mesh: Mesh, rules: shd.Rules | str
) -> tuple[TrainState, TrainState]:
    """A fresh TrainState around existing (e.g. loaded from a HF folder, host numpy) params."""

    def init_boxed(p) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))

    abstract = jax.eval_shape(init_boxed, boxed_abstract_params)
    shardings = shd.logical_shardings(abstract, mesh, rules)
    placed = shd.place_host_params(params, shardings.params)
    state = jax.jit(
        lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p)),
        in_shardings=(shardings.params,),
        out_shardings=shardings,
    )(placed)
    return state, shardings


def abstract_state(
    boxed_abstract_params: Any, optimizer: optax.GradientTransformation, mesh: Mesh, rules: shd.Rules | str
) -> tuple[TrainState, TrainState]:
    """(TrainState of ShapeDtypeStructs carrying their shardings, the shardings): the state
    `state_from_params` would place, with no memory touched (for `jit(...).lower`)."""

    def init_boxed(p) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))

    abstract = jax.eval_shape(init_boxed, boxed_abstract_params)
    shardings = shd.logical_shardings(abstract, mesh, rules)
    structs = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                     nn.meta.unbox(abstract), shardings)
    return structs, shardings


def make_train_step(
    loss_fn: Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]] | None,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    state_shardings: TrainState,
    batch_shardings: Any,
    rules: shd.Rules | str,
    *,
    value_and_grad_fn: Callable[[Any, dict, jax.Array], tuple[tuple[jax.Array, dict], Any]] | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """The one jitted update: grads of `loss_fn(params, batch, rng) -> (loss, metrics)` (or a
    ready `value_and_grad_fn`, e.g. gradient caching), an optimizer step, and metrics (loss,
    grad_norm, plus the loss's own). State is donated."""
    rules = shd.get_rules(rules)
    if (loss_fn is None) == (value_and_grad_fn is None):
        raise ValueError("give exactly one of loss_fn and value_and_grad_fn")
    grad_fn = value_and_grad_fn or jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        with nn.logical_axis_rules(list(rules)):
            (loss, metrics), grads = grad_fn(state.params, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings, shd.replicated(mesh)),
        out_shardings=(state_shardings, shd.replicated(mesh)),
        donate_argnums=(0,),
    )

    def run(state, batch, rng):
        with jax.set_mesh(mesh):
            return jitted(state, batch, rng)

    def lower(state, batch, rng):
        """The step lowered for these arguments (`.compile().as_text()` shows its HLO)."""
        with jax.set_mesh(mesh):
            return jitted.lower(state, batch, rng)

    run.lower = lower
    return run
