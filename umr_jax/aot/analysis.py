"""What a compiled program says about itself: memory per chip, FLOPs, collectives, and a
roofline estimate of its step time.

XLA's `cost_analysis()` counts a loop body once, and our programs loop (layers scanned over
depth, gradient-cache chunks, vocabulary chunks), so FLOPs and collectives are counted here
from the optimised HLO: every computation is weighted by how often it runs (a `while` body by
its trip count, read from the loop condition's bound), matmuls (`dot`, and TPU's
`convolution`) give 2 x output elements x contracted size, and collectives their bytes.

One cohesive thing: what one compiled program says about its cost (the HLO parser, the
loop-weighted counts built on it, the memory figures, the roofline that combines them); ~430 lines.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3b11fnuz": 1,
               "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8,
               "c64": 8, "c128": 16}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute", "ragged-all-to-all")
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "while", "conditional", "call",
               "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency"}
_SLICING = {"dynamic-slice", "gather", "slice"}  # read only what they return
_SHAPE = re.compile(r"\b(pred|[sufc]\d+|bf16|f8e\w+)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%(\S+)\s+\(.*\)\s+->\s+.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s+=\s+(.*?)\s+([a-z][a-z0-9\-]*)\((.*)$")


def shape_bytes(text: str) -> tuple[float, list[tuple[str, tuple[int, ...]]]]:
    """Total bytes and the (dtype, dims) of every array in an HLO shape (tuples included)."""
    arrays = [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _SHAPE.findall(text)]
    return sum(DTYPE_BYTES.get(dt, 4) * math.prod(dims) for dt, dims in arrays), arrays


@dataclasses.dataclass
class _Instr:
    name: str
    shape: str
    op: str
    rest: str
    is_root: bool = False


def _parse(hlo: str) -> tuple[dict[str, list[_Instr]], str]:
    computations: dict[str, list[_Instr]] = {}
    entry, current = "", None
    for line in hlo.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(1)
            computations[current] = []
            if line.startswith("ENTRY"):
                entry = current
            continue
        if current is None:
            continue
        if line.strip() == "}":
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if match:
            computations[current].append(_Instr(*match.groups(), is_root=line.lstrip().startswith("ROOT ")))
    return computations, entry


def _callees(instr: _Instr) -> list[tuple[str, str]]:
    """(role, computation) pairs an instruction calls: body/condition of a while, fusions, calls, branches."""
    out = []
    for role in ("body", "condition", "calls", "to_apply", "true_computation", "false_computation"):
        for name in re.findall(rf"\b{role}=%([\w.\-]+)", instr.rest):
            out.append((role, name))
    for group in re.findall(r"branch_computations=\{([^}]*)\}", instr.rest):
        out += [("branch", n) for n in re.findall(r"%([\w.\-]+)", group)]
    return out


def _trip_count(loop: _Instr, computations: dict[str, list[_Instr]], caller: list[_Instr]) -> int | None:
    """A while loop's trip count from its induction variable: the condition compares tuple
    element k with a constant bound, the body adds a constant step to element k, and the
    loop's operand gives element k's start (XLA's own loops, e.g. windowed einsums, step by 2
    or start past 0). None when the loop does not have that form."""
    cond = re.search(r"condition=%([\w.\-]+)", loop.rest)
    body = re.search(r"body=%([\w.\-]+)", loop.rest)
    if not cond or not body:
        return None
    cond_instrs = computations.get(cond.group(1), [])
    by_name = {i.name: i for i in cond_instrs}
    root = next((i for i in cond_instrs if i.is_root), None)
    while root is not None and root.op == "fusion":  # a compare fused with its operands
        inner = computations.get(re.search(r"calls=%([\w.\-]+)", root.rest).group(1), [])
        outer_args = _operands(root)
        params = {int(re.match(r"(\d+)", i.rest).group(1)): i.name for i in inner if i.op == "parameter"}
        rename = {params[k]: outer_args[k] for k in params if k < len(outer_args)}
        by_name.update({i.name: i for i in inner})
        root = next((i for i in inner if i.is_root), None)
        if root is not None:
            root = dataclasses.replace(root, rest=re.sub(r"%([\w.\-]+)", lambda m: "%" + rename.get(m.group(1), m.group(1)), root.rest))
    if root is None or root.op != "compare":
        return None
    direction = re.search(r"direction=(\w+)", root.rest)
    a, b = (by_name.get(o) for o in _operands(root)[:2])

    def constant(i: _Instr | None) -> int | None:
        while i is not None and i.op in ("copy", "convert", "bitcast"):
            i = by_name.get(_operands(i)[0]) if _operands(i) else None
        if i is not None and i.op == "constant":
            m = re.match(r"(-?\d+)", i.rest)
            return int(m.group(1)) if m else None
        return None

    def element(i: _Instr | None) -> int | None:
        if i is not None and i.op == "get-tuple-element":
            return int(re.search(r"index=(\d+)", i.rest).group(1))
        return None

    if element(a) is not None and constant(b) is not None and direction and direction.group(1) in ("LT", "LE", "NE"):
        k, bound = element(a), constant(b) + (1 if direction.group(1) == "LE" else 0)
    elif element(b) is not None and constant(a) is not None and direction and direction.group(1) in ("GT", "GE", "NE"):
        k, bound = element(b), constant(a) + (1 if direction.group(1) == "GE" else 0)
    else:
        return None
    body_instrs = computations.get(body.group(1), [])
    body_names = {i.name: i for i in body_instrs}
    body_root = next((i for i in body_instrs if i.is_root), None)
    step = 1
    if body_root is not None and body_root.op == "tuple" and k < len(_operands(body_root)):
        update = body_names.get(_operands(body_root)[k])
        while update is not None and update.op in ("copy", "bitcast"):
            update = body_names.get(_operands(update)[0])
        if update is not None and update.op == "add":
            for o in _operands(update):
                c = body_names.get(o)
                if c is not None and c.op == "constant":
                    step = int(re.match(r"(-?\d+)", c.rest).group(1))
    start = 0
    caller_names = {i.name: i for i in caller}
    init = caller_names.get(_operands(loop)[0]) if _operands(loop) else None
    if init is not None and init.op == "tuple" and k < len(_operands(init)):
        value = caller_names.get(_operands(init)[k])
        while value is not None and value.op in ("copy", "bitcast", "convert"):
            value = caller_names.get(_operands(value)[0])
        if value is not None and value.op == "constant":
            start = int(re.match(r"(-?\d+)", value.rest).group(1))
    if step <= 0:
        return None
    return max(0, -(-(bound - start) // step))


def _replica_group_size(rest: str, devices: int) -> int:
    explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", rest)
    if explicit:
        return max(1, len([d for d in explicit.group(1).split(",") if d]))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", rest)
    if iota:
        return int(iota.group(2))
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest)
    if mesh:
        sizes = {k.strip("' "): int(v) for k, v in re.findall(r"('?[\w]+'?)=(\d+)", mesh.group(1))}
        return math.prod(sizes.get(a.strip("' "), 1) for a in mesh.group(2).split(",") if a.strip())
    return devices


@dataclasses.dataclass
class HloCounts:
    matmul_flops: float  # per chip, loops counted by trip count
    hbm_bytes: float  # per chip: what every unfused op reads and writes (XLA's own estimate, loops counted)
    collectives: dict[str, dict[str, float]]  # kind -> {count, bytes, traffic}: per chip, per step
    unknown_loops: int  # while loops whose trip count could not be read (counted once)


def count_hlo(hlo: str, devices: int) -> HloCounts:
    computations, entry = _parse(hlo)
    shapes = {i.name: i.shape for instrs in computations.values() for i in instrs}
    weight: dict[str, float] = {}
    fused: set[str] = set()  # computations that are fusion bodies: their values stay on chip
    unknown = 0

    def visit(name: str, times: float, stack: tuple = ()) -> None:
        nonlocal unknown
        if name in stack:
            return
        weight[name] = weight.get(name, 0.0) + times
        for instr in computations.get(name, []):
            trips = None
            if instr.op == "while":
                trips = _trip_count(instr, computations, computations.get(name, []))
                if trips is None:
                    unknown += 1
            for role, callee in _callees(instr):
                if role == "to_apply":  # reductions' scalar computations
                    continue
                if instr.op == "fusion":
                    fused.add(callee)
                visit(callee, times * ((trips or 1) if role == "body" else 1), stack + (name,))

    visit(entry, 1.0)
    flops, hbm = 0.0, 0.0
    collectives: dict[str, dict[str, float]] = {}
    for name, instrs in computations.items():
        times = weight.get(name, 0.0)
        if not times:
            continue
        for instr in instrs:
            if name not in fused and instr.op not in _NO_TRAFFIC and not instr.op.endswith("-done"):
                hbm += times * _traffic(instr, shapes, computations)
            if instr.op in ("dot", "convolution"):
                flops += times * _matmul_flops(instr, shapes)
                continue
            kind = instr.op.removesuffix("-start")
            if kind in COLLECTIVES and not instr.op.endswith("-done"):
                operands = re.findall(r"%([\w.\-]+)", instr.rest.split(")")[0])
                result = shape_bytes(instr.shape)[0]
                inputs = sum(shape_bytes(shapes.get(o, ""))[0] for o in operands)
                if kind in ("reduce-scatter", "collective-permute"):
                    size = inputs  # what leaves each chip
                elif kind == "all-gather" and instr.op.endswith("-start"):
                    size = result - inputs  # the -start result holds the inputs and the gathered outputs
                else:
                    size = result
                n = _replica_group_size(instr.rest, devices)
                traffic = {"all-reduce": 2 * size * (n - 1) / n, "collective-permute": size}.get(kind, size * (n - 1) / max(n, 1))
                entry_ = collectives.setdefault(kind, {"count": 0.0, "bytes": 0.0, "traffic": 0.0, "largest": 0.0})
                entry_["count"] += times
                entry_["bytes"] += times * size
                entry_["traffic"] += times * traffic
                entry_["largest"] = max(entry_["largest"], size)  # one op's bytes
    return HloCounts(flops, hbm, collectives, unknown)


def _operands(instr: _Instr) -> list[str]:
    return re.findall(r"%([\w.\-]+)", instr.rest.split(")")[0])


def _traffic(instr: _Instr, shapes: dict[str, str], computations: dict[str, list[_Instr]]) -> float:
    """HBM bytes an unfused op reads and writes. Slices count what they touch, not the whole
    buffer: a `dynamic-slice` reads its output's bytes, an in-place `dynamic-update-slice`
    writes its update's (so a scanned layer reads one layer's weights per iteration, not the
    whole stack); inside a fusion, a parameter only sliced is counted by its slices."""
    operands = _operands(instr)
    sizes = [shape_bytes(shapes.get(o, ""))[0] for o in operands]
    out = shape_bytes(instr.shape)[0]
    if instr.op in _SLICING or instr.op == "slice-start":
        return 2 * max(a for a in [shape_bytes(f"{dt}[{','.join(map(str, d))}]")[0] for dt, d in shape_bytes(instr.shape)[1][-2:]] or [out])
    if instr.op == "dynamic-update-slice":
        return 2 * (sizes[1] if len(sizes) > 1 else out)
    if instr.op != "fusion":
        return out + sum(sizes)
    body = re.search(r"calls=%([\w.\-]+)", instr.rest)
    inner = computations.get(body.group(1), []) if body else []
    params = {int(re.match(r"(\d+)", i.rest).group(1)): i.name for i in inner if i.op == "parameter"}
    users: dict[str, list[_Instr]] = {}
    for i in inner:
        for o in _operands(i):
            users.setdefault(o, []).append(i)

    def uses_of(name: str) -> list[_Instr]:  # through bitcasts, which move nothing
        found = []
        for u in users.get(name, []):
            found += uses_of(u.name) if u.op == "bitcast" else [u]
        return found

    def source(name: str) -> str:
        producer = next((i for i in inner if i.name == name), None)
        return source(_operands(producer)[0]) if producer is not None and producer.op == "bitcast" else name

    total = 0.0
    in_place = set()
    for index, size in enumerate(sizes):
        uses = uses_of(params.get(index, ""))
        sliced = _sliced_bytes(body.group(1), index, computations) if body else None
        if sliced is not None:
            total += sliced
        elif uses and all(u.op == "dynamic-update-slice" and source(_operands(u)[0]) == params[index] for u in uses):
            in_place.add(index)
            total += sum(shape_bytes(shapes.get(_operands(u)[1], "") or _shape_in(inner, _operands(u)[1]))[0] for u in uses)
        else:
            total += size
    by_name = {i.name: i for i in inner}
    root = next((i for i in inner if i.is_root), inner[-1] if inner else None)
    outputs = [by_name.get(o) for o in _operands(root)] if root is not None and root.op == "tuple" else [root]
    for element in outputs:
        while element is not None and element.op == "bitcast":
            element = by_name.get(_operands(element)[0])
        if element is None:
            continue
        in_place_update = element.op == "dynamic-update-slice" and any(
            source(_operands(element)[0]) == params.get(i) for i in in_place)
        if not in_place_update:  # an in-place update's bytes are counted above
            total += shape_bytes(element.shape)[0]
    return total


def _sliced_bytes(computation: str, index: int, computations: dict[str, list[_Instr]], depth: int = 0) -> float | None:
    """The bytes a fused computation reads of its parameter `index` when it only slices it
    (`dynamic-slice`, through bitcasts and nested fusions); None when it reads it whole."""
    inner = computations.get(computation, [])
    param = next((i.name for i in inner if i.op == "parameter" and re.match(rf"{index}\b", i.rest)), None)
    if param is None or depth > 8:
        return None
    total, pending = 0.0, [param]
    while pending:
        name = pending.pop()
        users = [i for i in inner if name in _operands(i)]
        if not users:
            return None
        for u in users:
            if u.op == "bitcast":
                pending.append(u.name)
            elif u.op in _SLICING and _operands(u)[0] == name:
                total += shape_bytes(u.shape)[0]
            elif u.op == "fusion":
                nested = re.search(r"calls=%([\w.\-]+)", u.rest)
                positions = [k for k, o in enumerate(_operands(u)) if o == name]
                parts = [_sliced_bytes(nested.group(1), k, computations, depth + 1) if nested else None for k in positions]
                if any(p is None for p in parts):
                    return None
                total += sum(parts)
            else:
                return None
    return total


def _shape_in(instrs: list[_Instr], name: str) -> str:
    return next((i.shape for i in instrs if i.name == name), "")


def _matmul_flops(instr: _Instr, shapes: dict[str, str]) -> float:
    """2 x multiply-adds of a `dot`, or of a `convolution` the way XLA's cost analysis counts
    them: only the (output, window) positions that read a real input element (TPU programs
    express batched matmuls as convolutions whose padded, dilated windows are mostly holes)."""
    out = shape_bytes(instr.shape)[1]
    operands = re.findall(r"%([\w.\-]+)", instr.rest.split(")")[0])
    if not out or len(operands) < 2:
        return 0.0
    lhs, rhs = (shape_bytes(shapes.get(o, ""))[1] for o in operands[:2])
    if not lhs or not rhs:
        return 0.0
    lhs, rhs, out = lhs[0][1], rhs[0][1], out[0][1]
    if instr.op == "dot":
        dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr.rest)
        contracted = math.prod(lhs[int(d)] for d in dims.group(1).split(",") if d) if dims else 1
        return 2.0 * math.prod(out) * contracted
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", instr.rest)
    if not labels:
        return 0.0
    lhs_l, rhs_l, out_l = labels.groups()
    window = re.search(r"window=\{([^}]*)\}", instr.rest)
    fields = dict(item.split("=", 1) for item in window.group(1).split()) if window else {}
    spatial = sorted(c for c in lhs_l if c.isdigit())

    def per_dim(key: str, default: int) -> list[int]:
        return [int(v) for v in fields[key].split("x")] if key in fields else [default] * len(spatial)

    size, stride = per_dim("size", 1), per_dim("stride", 1)
    lhs_dilate, rhs_dilate = per_dim("lhs_dilate", 1), per_dim("rhs_dilate", 1)
    pads = [int(p.split("_")[0]) for p in fields["pad"].split("x")] if "pad" in fields else [0] * len(spatial)
    valid = 1
    for d, name in enumerate(spatial):
        in_size, out_size = lhs[lhs_l.index(name)], out[out_l.index(name)]
        o = np.arange(out_size)[:, None]
        k = np.arange(size[d])[None, :]
        pos = o * stride[d] - pads[d] + k * rhs_dilate[d]
        extent = (in_size - 1) * lhs_dilate[d] + 1
        valid *= int(np.count_nonzero((pos >= 0) & (pos < extent) & (pos % lhs_dilate[d] == 0)))
    groups = re.search(r"feature_group_count=(\d+)", instr.rest)
    batch_groups = re.search(r"batch_group_count=(\d+)", instr.rest)
    input_features = lhs[lhs_l.index("f")] // (int(groups.group(1)) if groups else 1)
    batch = lhs[lhs_l.index("b")] // (int(batch_groups.group(1)) if batch_groups else 1)
    return 2.0 * input_features * rhs[rhs_l.index("o")] * batch * valid


# ---------------------------------------------------------------------------------------------
# Memory


def per_chip_bytes(tree: Any) -> float:
    """Bytes one chip holds of a pytree of ShapeDtypeStructs with shardings (the most any chip holds)."""
    import jax

    total = 0.0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def memory(compiled, groups: dict[str, Any]) -> dict[str, float]:
    """Per-chip bytes: each input group, temporaries, outputs not aliased to inputs, code, total."""
    stats = compiled.memory_analysis()
    out = {f"{kind}": per_chip_bytes(tree) for kind, tree in groups.items()}
    out["arguments"] = float(stats.argument_size_in_bytes)
    out["temporaries"] = float(stats.temp_size_in_bytes)
    out["outputs (not aliased)"] = float(max(0, stats.output_size_in_bytes - stats.alias_size_in_bytes))
    out["code"] = float(stats.generated_code_size_in_bytes)
    out["total"] = out["arguments"] + out["temporaries"] + out["outputs (not aliased)"] + out["code"]
    return out


def largest_inputs(groups: dict[str, Any], count: int = 5) -> list[tuple[str, float, str]]:
    """The `count` largest inputs per chip: (path, bytes, shape and sharding)."""
    import jax

    found = []
    for kind, tree in groups.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            shape = leaf.sharding.shard_shape(leaf.shape)
            found.append((f"{kind}{jax.tree_util.keystr(path)}", math.prod(shape) * np.dtype(leaf.dtype).itemsize,
                          f"{leaf.dtype}{list(leaf.shape)} as {list(shape)} per chip ({leaf.sharding.spec})"))
    return sorted(found, key=lambda x: -x[1])[:count]


# ---------------------------------------------------------------------------------------------
# Roofline


def roofline(chip, flops_per_chip: float, bytes_accessed: float, collective_traffic: float,
             model_flops_per_chip: float) -> dict[str, float]:
    """An estimate of one step's time from the chip's published peaks: compute, HBM traffic
    and ICI traffic, with compute and HBM overlapped and collectives not (an upper bound when
    XLA overlaps them with compute); MFU = model FLOPs / (time x peak)."""
    compute = flops_per_chip / chip.bf16_flops
    hbm = bytes_accessed / chip.hbm_bandwidth
    ici = collective_traffic / chip.ici_bandwidth
    step = max(compute, hbm) + ici
    return {"compute_s": compute, "hbm_s": hbm, "ici_s": ici, "step_s": step,
            "mfu": model_flops_per_chip / (step * chip.bf16_flops) if step > 0 else 0.0,
            "bound": "compute" if compute >= max(hbm, ici) else ("HBM" if hbm >= ici else "ICI")}
