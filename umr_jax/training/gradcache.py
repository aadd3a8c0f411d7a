"""Gradient caching (Gao et al., 2021): contrastive losses over a global batch far larger
than one forward/backward pass can hold.

1. Encode every query and passage chunk without keeping activations (a `lax.scan` of
   forward passes).
2. Compute the loss and its gradient with respect to the embeddings only (cheap: [N, D]).
3. Re-encode chunk by chunk under `jax.vjp`, pulling the cached embedding gradient back into
   the parameters, and accumulate.
The result equals the plain gradient of the same loss (same dropout masks: chunk i always
uses `fold_in(rng, i)`), while peak activation memory is one chunk's.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Encoder = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]  # (params, ids, mask, rng) -> [n, D]


def _chunks(x: jax.Array, size: int) -> jax.Array:
    """[n, ...] -> [n // size, size, ...], chunk i holding rows i, i + n/size, i + 2n/size, ...

    Strided, not contiguous: a batch sharded over its first dim keeps every device's block of
    rows split evenly across the chunks (when `size` is a multiple of the number of batch
    shards), so every chunk runs on every device and making the chunks moves no data. With
    contiguous chunks, chunk i would live on a few devices: the scan's slice would need
    collective-permutes each step while the other devices wait.
    """
    if x.shape[0] % size:
        raise ValueError(f"batch of {x.shape[0]} rows is not a multiple of the chunk size {size}")
    return jnp.swapaxes(x.reshape(size, x.shape[0] // size, *x.shape[1:]), 0, 1)


def _unchunk(x: jax.Array) -> jax.Array:
    """The inverse of `_chunks`: [n // size, size, ...] -> [n, ...] in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def encode_in_chunks(encode: Encoder, params: Any, ids: jax.Array, mask: jax.Array, rng: jax.Array, chunk: int) -> jax.Array:
    """Embeddings [n, D] of `ids`/`mask` [n, L], computed `chunk` rows at a time; chunk i uses fold_in(rng, i)."""
    ids_c, mask_c = _chunks(ids, chunk), _chunks(mask, chunk)

    def body(_, x):
        i, chunk_ids, chunk_mask = x
        return None, encode(params, chunk_ids, chunk_mask, jax.random.fold_in(rng, i))

    _, emb = jax.lax.scan(body, None, (jnp.arange(ids_c.shape[0]), ids_c, mask_c))
    return _unchunk(emb)


def _pull_back(encode: Encoder, params: Any, ids, mask, grads_emb, rng, chunk: int) -> Any:
    ids_c, mask_c, g_c = _chunks(ids, chunk), _chunks(mask, chunk), _chunks(grads_emb, chunk)

    def body(acc, x):
        i, chunk_ids, chunk_mask, g = x
        _, vjp = jax.vjp(lambda p: encode(p, chunk_ids, chunk_mask, jax.random.fold_in(rng, i)), params)
        (g_params,) = vjp(g)
        return jax.tree_util.tree_map(jnp.add, acc, g_params), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    acc, _ = jax.lax.scan(body, zeros, (jnp.arange(ids_c.shape[0]), ids_c, mask_c, g_c))
    return acc


def grad_cached_value_and_grad(
    encode_queries: Encoder,
    encode_passages: Encoder,
    loss_on_embeddings: Callable[[jax.Array, jax.Array, dict], tuple[jax.Array, dict]],
    *,
    query_chunk: int,
    passage_chunk: int,
) -> Callable[[Any, dict, jax.Array], tuple[tuple[jax.Array, dict], Any]]:
    """A `value_and_grad`-shaped function `(params, batch, rng) -> ((loss, metrics), grads)`.

    `batch` holds query_ids/query_mask [Q, Lq] and passage_ids/passage_mask [P, Lp] plus
    whatever `loss_on_embeddings(query_emb, passage_emb, batch)` needs.
    """

    def value_and_grad(params: Any, batch: dict, rng: jax.Array):
        rq, rp = jax.random.split(rng)
        q_emb = encode_in_chunks(encode_queries, params, batch["query_ids"], batch["query_mask"], rq, query_chunk)
        p_emb = encode_in_chunks(encode_passages, params, batch["passage_ids"], batch["passage_mask"], rp, passage_chunk)
        (loss, metrics), (g_q, g_p) = jax.value_and_grad(loss_on_embeddings, argnums=(0, 1), has_aux=True)(
            jax.lax.stop_gradient(q_emb), jax.lax.stop_gradient(p_emb), batch
        )
        grads_q = _pull_back(encode_queries, params, batch["query_ids"], batch["query_mask"], g_q, rq, query_chunk)
        grads_p = _pull_back(encode_passages, params, batch["passage_ids"], batch["passage_mask"], g_p, rp, passage_chunk)
        return (loss, metrics), jax.tree_util.tree_map(jnp.add, grads_q, grads_p)

    return value_and_grad


def plain_value_and_grad(
    encode_queries: Encoder,
    encode_passages: Encoder,
    loss_on_embeddings: Callable[[jax.Array, jax.Array, dict], tuple[jax.Array, dict]],
    *,
    query_chunk: int,
    passage_chunk: int,
) -> Callable[[Any, dict, jax.Array], tuple[tuple[jax.Array, dict], Any]]:
    """The same objective differentiated end to end (activations of the whole batch kept);
    the reference gradient caching must equal, and the faster choice for small batches."""

    def loss(params, batch, rng):
        rq, rp = jax.random.split(rng)
        q_emb = encode_in_chunks(encode_queries, params, batch["query_ids"], batch["query_mask"], rq, query_chunk)
        p_emb = encode_in_chunks(encode_passages, params, batch["passage_ids"], batch["passage_mask"], rp, passage_chunk)
        return loss_on_embeddings(q_emb, p_emb, batch)

    return jax.value_and_grad(loss, has_aux=True)
