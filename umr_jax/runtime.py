"""The runtime: one object per run that joins the multi-host job and gives each role of the
pipeline its device mesh and sharding rules (t5x's partitioner, in spirit). It is built once,
from the config or from a command's flags, and handed to every stage, the loop, the trainers
and the scaling study.

    runtime = Runtime.from_config(config)            # or Runtime.from_args(args, role="score")
    runtime.start()                                  # joins the multi-host job; no-op on one host
    encoder = TowerEncoder(folder, mesh=runtime.mesh("encode"), rules=runtime.rules("encode"))

Roles and where their meshes live (decided here, once):
  encode   the retriever's towers encoding passages and questions (encode, retrieve, the
           loop's and the study's evaluations). A mesh over THIS process's devices: encoding
           needs no cross-host communication, so hosts encode whole shards of their own and
           never wait on one another (see `stages.encode`).
  score    the frozen scorer (stage 1). A global mesh over every process's devices: the
           scorer's parameters are sharded across hosts (mT5-XL does not fit one host's HBM
           replicated), and each process feeds its slice of every global batch.
  train    the dual encoder being trained (stage 2, contrastive). A global mesh.

Config keys (all optional; the defaults below):
  runtime.encode.mesh = "data=-1,fsdp=1,model=1"   runtime.encode.rules = "data_parallel"
  runtime.score.mesh  = "data=1,fsdp=-1,model=1"   runtime.score.rules  = "fsdp"
  runtime.train.mesh  = "data=-1,fsdp=1,model=1"   runtime.train.rules  = "data_parallel"
A mesh is written as the `--mesh` flag writes it (axis=size pairs, one size may be -1) or as a
dict; rules are a rule-set name (`data_parallel`, `fsdp`, `fsdp_tp`) or a list of
(logical axis, mesh axes) pairs. A command's `--mesh [ROLE:]SPEC` / `--rules [ROLE:]NAME` flags
set a role's two keys: `--mesh score:data=1,fsdp=-1,model=4` is
`runtime.score.mesh=data=1,fsdp=-1,model=4`; without ROLE they set the command's own role (encode,
retrieve, score, train) or every role (loop, scaling, compile, demo).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping

from umr_jax.errors import InputError

ROLES = ("encode", "score", "train")
DEFAULT_MESH = {"encode": "data=-1,fsdp=1,model=1", "score": "data=1,fsdp=-1,model=1", "train": "data=-1,fsdp=1,model=1"}
DEFAULT_RULES = {"encode": "data_parallel", "score": "fsdp", "train": "data_parallel"}
PER_HOST = {"encode": True, "score": False, "train": False}


def parse_mesh(spec: str | Mapping[str, int], where: str = "--mesh") -> dict[str, int]:
    """'data=-1,fsdp=2' (or {'data': -1, 'fsdp': 2}) -> {'data': -1, 'fsdp': 2}."""
    if isinstance(spec, Mapping):
        try:
            return {str(name): int(size) for name, size in spec.items()}
        except (TypeError, ValueError):
            raise InputError(f"{where} {dict(spec)!r}: expected axis sizes as integers, e.g. data=-1,fsdp=2") from None
    sizes = {}
    for part in filter(None, (p.strip() for p in str(spec).split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            sizes[name.strip()] = int(value)
        except ValueError:
            raise InputError(f"{where} {spec!r}: expected comma-separated axis=size pairs, e.g. data=-1,fsdp=2") from None
    return sizes


def runtime_config(**roles: Mapping[str, Any]):
    """The `runtime` section of a config: every role's mesh and rules, the defaults where
    `roles` (e.g. `train=dict(mesh="data=2,fsdp=-1", rules="fsdp")`) says nothing, so every key
    can be overridden from the command line (`runtime.score.mesh=data=1,fsdp=-1,model=4`)."""
    import ml_collections

    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; the roles are {ROLES}")
    return ml_collections.ConfigDict({
        name: {"mesh": roles.get(name, {}).get("mesh", DEFAULT_MESH[name]),
               "rules": roles.get(name, {}).get("rules", DEFAULT_RULES[name])} for name in ROLES})


def role_flag(kind: str):
    """argparse type of --mesh / --rules: `[ROLE:]VALUE` -> (ROLE or None, VALUE). A rule set
    name is checked here (a usage error); a mesh's axes when the runtime is built."""

    def parse(text: str) -> tuple[str | None, str]:
        from umr_jax.parallel.sharding import RULE_SETS

        head, sep, rest = text.partition(":")
        role, value = (head, rest) if sep else (None, text)
        if role is not None and role not in ROLES:
            raise argparse.ArgumentTypeError(f"{text!r}: {role!r} is not a role; expected [ROLE:]{kind.upper()} with ROLE "
                                             f"one of {', '.join(ROLES)}")
        if kind == "rules" and value not in RULE_SETS:
            raise argparse.ArgumentTypeError(f"{text!r}: unknown rule set {value!r}; choose from {', '.join(sorted(RULE_SETS))}")
        return role, value

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def add_runtime_flags(parser: argparse.ArgumentParser, role: str | None = None, roles: tuple[str, ...] = (), *,
                      distributed: bool = True) -> None:
    """The multi-host flags, and --mesh/--rules for the role(s) the command runs.

    One spelling everywhere: `--mesh [ROLE:]SPEC` and `--rules [ROLE:]NAME`, repeatable, where
    `--mesh score:data=1,fsdp=-1,model=4` is `runtime.score.mesh=data=1,fsdp=-1,model=4`. A
    command with one `role` (encode, retrieve, score, train) takes them without ROLE; a command
    with several `roles` (loop, scaling, compile, demo) applies one without ROLE to all of them.
    `distributed=False`: no multi-host flags (`umr-jax compile` joins no job)."""
    from umr_jax.parallel.cli_flags import add_distributed_flags
    from umr_jax.parallel.sharding import RULE_SETS

    if distributed:
        add_distributed_flags(parser)
    if role is None and not roles:
        return
    if role is not None:
        where = "this host's devices" if PER_HOST[role] else "every host's devices"
        group = parser.add_argument_group(f"device mesh of the {role} role ({where}; config keys runtime.{role}.mesh/rules)")
        group.add_argument("--mesh", type=role_flag("mesh"), action="append", metavar="SPEC",
                           help=f"mesh axis sizes, e.g. data=1,fsdp=-1,model=4; one may be -1 (default {DEFAULT_MESH[role]})")
        group.add_argument("--rules", type=role_flag("rules"), action="append", metavar="NAME",
                           help=f"sharding rule set: {', '.join(sorted(RULE_SETS))} (default {DEFAULT_RULES[role]})")
        return
    names = ", ".join(roles)
    group = parser.add_argument_group(f"device meshes of the roles ({names}; config keys runtime.<role>.mesh/rules)")
    group.add_argument("--mesh", type=role_flag("mesh"), action="append", metavar="[ROLE:]SPEC",
                       help=f"mesh axis sizes of ROLE ({names}), e.g. score:data=1,fsdp=-1,model=4 (the same as "
                            f"runtime.score.mesh=data=1,fsdp=-1,model=4); without ROLE, of every role; repeatable")
    group.add_argument("--rules", type=role_flag("rules"), action="append", metavar="[ROLE:]NAME",
                       help=f"sharding rule set of ROLE ({', '.join(sorted(RULE_SETS))}), e.g. score:fsdp_tp; without "
                            "ROLE, of every role; repeatable")


def _flag_entries(value: Any) -> list[tuple[str | None, Any]]:
    """--mesh/--rules as parsed (a list of (role, value)), or as a plain value (a spec string or
    a rule list set in code): [(role or None, value)]."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 and (v[0] is None or v[0] in ROLES)
                                       and isinstance(v[1], str) for v in value):
        return list(value)
    if isinstance(value, tuple) and len(value) == 2 and (value[0] is None or value[0] in ROLES) and isinstance(value[1], str):
        return [value]
    return [(None, value)]


def _rules_value(rules: Any) -> str | tuple:
    if isinstance(rules, str):
        return rules
    return tuple((str(name), axes if axes is None or isinstance(axes, str) else tuple(axes)) for name, axes in rules)


@dataclasses.dataclass(frozen=True)
class RoleLayout:
    """One role's mesh sizes (as written) and rule set."""

    mesh: str | Mapping[str, int]
    rules: str | tuple
    where: str = ""  # where the mesh was given, for messages: "--mesh" or "runtime.<role>.mesh"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Distributed start plus a mesh and rules per role (module docstring)."""

    layouts: Mapping[str, RoleLayout]
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any = None, args: argparse.Namespace | None = None, role: str | None = None) -> "Runtime":
        """From `config.runtime` (defaults where absent), with `args`' --mesh/--rules (when given)
        overriding the keys of the role they name, or, without a role, of `role` (every role when
        `role` is None), and its --coordinator/--num-processes/--process-id joining a job. Given
        several times, the last one for a role wins."""
        section = config.get("runtime", None) if config is not None else None
        layouts = {}
        for name in ROLES:
            part = (section.get(name, None) if section is not None else None) or {}
            layouts[name] = RoleLayout(part.get("mesh", DEFAULT_MESH[name]), _rules_value(part.get("rules", DEFAULT_RULES[name])),
                                       f"runtime.{name}.mesh")
        if args is not None:
            for key in ("mesh", "rules"):
                for named, value in _flag_entries(getattr(args, key, None)):
                    if named is not None and role is not None and named != role:
                        raise InputError(f"--{key} {named}:{value}: this command runs the {role} role only; "
                                         f"give --{key} {value}")
                    for target in [named] if named is not None else [role] if role is not None else list(ROLES):
                        old = layouts[target]
                        layouts[target] = (RoleLayout(value, old.rules, "--mesh") if key == "mesh"
                                           else RoleLayout(old.mesh, _rules_value(value), old.where))
        runtime = cls(layouts, getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                      getattr(args, "process_id", None))
        runtime.check()
        return runtime

    @classmethod
    def from_args(cls, args: argparse.Namespace, role: str) -> "Runtime":
        """For commands without a config: the defaults, with the flags of `role`."""
        return cls.from_config(None, args, role)

    def check(self) -> None:
        """Refuse unknown roles, mesh axes and rule sets before any device is touched."""
        from umr_jax.parallel.mesh import MESH_AXES
        from umr_jax.parallel.sharding import RULE_SETS

        unknown = set(self.layouts) - set(ROLES)
        if unknown:
            raise InputError(f"runtime: unknown role(s) {sorted(unknown)}; the roles are {', '.join(ROLES)}")
        for name, layout in self.layouts.items():
            sizes = parse_mesh(layout.mesh, layout.where)
            bad = set(sizes) - set(MESH_AXES)
            if bad:
                raise InputError(f"{layout.where} {layout.mesh!r}: unknown axes {sorted(bad)}; the axes are {', '.join(MESH_AXES)}")
            if isinstance(layout.rules, str) and layout.rules not in RULE_SETS:
                raise InputError(f"runtime.{name}.rules {layout.rules!r}: unknown rule set; choose from {', '.join(sorted(RULE_SETS))}")

    # ---- use -------------------------------------------------------------------------------

    def start(self) -> "Runtime":
        """Join the multi-host job (explicit flags, or automatic on a TPU VM); a no-op on one
        host and when already joined. Call before anything touches a device."""
        from umr_jax.parallel.mesh import DistributedConfig, initialize_distributed

        try:
            initialize_distributed(DistributedConfig(self.coordinator, self.num_processes, self.process_id))
        except ValueError as err:
            raise InputError(str(err)) from None
        return self

    def mesh(self, role: str, devices=None):
        """`role`'s device mesh: over this process's devices (encode) or every process's.
        `devices`: a whole job's devices instead of this process's view (`umr-jax compile`
        passes a TPU topology's); per-host roles then take the first host's."""
        import jax

        from umr_jax.parallel.mesh import make_mesh

        layout = self._layout(role)
        if devices is not None:
            devices = list(devices)
            if PER_HOST[role]:
                devices = [d for d in devices if d.process_index == devices[0].process_index]
        else:
            devices = jax.local_devices() if PER_HOST[role] else jax.devices()
        try:
            return make_mesh(parse_mesh(layout.mesh, layout.where), devices)
        except ValueError as err:
            raise InputError(f"{layout.where} {layout.mesh!r}: {err}") from None

    def rules(self, role: str):
        """`role`'s sharding rules (a rule set resolved to its (logical, mesh axes) pairs)."""
        from umr_jax.parallel.sharding import get_rules

        return get_rules(self._layout(role).rules)

    def mesh_and_rules(self, role: str):
        return self.mesh(role), self.rules(role)

    @property
    def is_writer(self) -> bool:
        """True on the process that writes shared outputs (process 0)."""
        import jax

        return jax.process_index() == 0

    def barrier(self, name: str) -> None:
        """Wait for every process (a no-op with one); raises `JobFailed` when another process of
        the job failed meanwhile (`parallel.mesh.barrier`)."""
        from umr_jax.parallel.mesh import barrier

        barrier(name)

    def _layout(self, role: str) -> RoleLayout:
        if role not in self.layouts:
            raise ValueError(f"unknown role {role!r}; the roles are {ROLES}")
        return self.layouts[role]
