"""Config files: small Python files that define `get_config()` returning an
`ml_collections.ConfigDict` (big_vision style: each file starts with the command that runs it).

  load_config("umr_xor_retrieve", ["train.batch_size=32", "runtime.train.mesh=data=-1,fsdp=4"])
  load_config("configs/webfaq_scaling.py:small")   # the text after ':' is passed to get_config
  load_config("demo_scaling:runs/elsewhere")       # a packaged config by name, with its argument

A config is a path (`path.py`, `path.py:arg`) or the name of one shipped with the package
(`configs/` at the top of the checkout, installed as `umr_jax.configs`; `config_names()` lists
them, `.py` optional): an existing file wins, so a local `demo.py` shadows the packaged `demo`.

Overrides are `dotted.key=value`; values are parsed as Python literals when they can be
(`4`, `2e-5`, `True`, `[1, 2]`, `None`), else taken as strings. Overriding a key the config
does not define is an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from umr_jax.errors import InputError


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# Short names for packaged configs (the issue tracker's spellings).
CONFIG_ALIASES = {"umr_xor_loop": "umr_xor_retrieve_loop"}


def _packaged_configs():
    """The folder of the packaged configs: `umr_jax.configs` (a wheel, or an editable install
    made with this pyproject), else `configs/` beside the `umr_jax` package (a source checkout
    whose editable install predates the mapping)."""
    try:
        return importlib.resources.files("umr_jax.configs")
    except ModuleNotFoundError:
        return importlib.resources.files("umr_jax").joinpath("..", "configs")


def config_names() -> list[str]:
    """The names of the configs shipped with the package (`--config NAME`), aliases included."""
    try:
        names = {entry.name[:-3] for entry in _packaged_configs().iterdir()
                 if entry.name.endswith(".py") and not entry.name.startswith("_")}
    except (FileNotFoundError, NotADirectoryError):  # an install without its configs
        names = set()
    return sorted(names | {alias for alias, target in CONFIG_ALIASES.items() if target in names})


def config_help(example: str = "umr_xor_retrieve_loop") -> str:
    """The `--config` help text every command shares."""
    return (f"a config shipped with umr-jax by name ({', '.join(config_names())}; e.g. {example}), or a config file "
            f"path.py; NAME:ARG / path.py:ARG passes ARG to get_config")


@contextlib.contextmanager
def _config_file(spec: str):
    """(path, arg, name) of `spec`: an existing file, else a packaged config's name."""
    if Path(spec).is_file():
        yield Path(spec), "", spec
        return
    name, _, arg = spec.partition(":")
    if Path(name).is_file():
        yield Path(name), arg, name
        return
    stem = name[:-3] if name.endswith(".py") else name
    stem = CONFIG_ALIASES.get(stem, stem)
    looks_like_a_name = stem and not any(sep in name for sep in ("/", os.sep)) and stem.isidentifier()
    if looks_like_a_name:
        entry = _packaged_configs().joinpath(f"{stem}.py")
        if entry.is_file():
            with importlib.resources.as_file(entry) as path:
                yield path, arg, stem
            return
    available = ", ".join(config_names()) or "(none installed)"
    if looks_like_a_name:
        raise InputError(f"no config file of that name here and no packaged config {stem!r}; "
                         f"give a config file path or one of: {available}", name)
    raise InputError(f"config file not found; give a config file path or a packaged config name ({available})", name)


def load_config(spec: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load a config, `path.py[:arg]` or a packaged config's `NAME[:arg]`, and apply `key=value`
    overrides."""
    with _config_file(os.fspath(spec)) as (path, arg, name):
        module_spec = importlib.util.spec_from_file_location(f"umr_jax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # a config file is user code: report where it failed
            raise InputError(f"config file failed to load: {type(err).__name__}: {err}", name) from err
    if not hasattr(module, "get_config"):
        raise InputError("config file must define get_config()", name)
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as err:
        raise InputError(f"get_config() failed: {type(err).__name__}: {err}", name) from err
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    apply_overrides(config, overrides, source=name)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str], source: Any = None) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r} must look like key=value", source)
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise InputError(f"override {item!r}: config has no key {key!r}", source)
            node = node[part]
        if parts[-1] not in node:
            raise InputError(f"override {item!r}: config has no key {key!r}", source)
        value = _parse_value(text)
        _check_type(key, node[parts[-1]], value, text, source)
        with config.ignore_type():  # e.g. a rule-set name replaced by an explicit list of rules
            node[parts[-1]] = value


def _check_type(key: str, current: Any, value: Any, text: str, source: Any) -> None:
    """A number or a flag in the config must stay one (`train.epochs=abc` would fail much later,
    deep in the trainer). Ints and floats replace each other; None is allowed everywhere, and
    keys of other types take any value (a rule-set name may become a list of rules)."""
    if value is None:
        return
    if isinstance(current, bool):
        expected, ok = "a boolean (True or False)", isinstance(value, bool)
    elif isinstance(current, (int, float)):
        expected, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return
    if not ok:
        raise InputError(f"override {key}={text}: {key} expects {expected} (it is {current!r}), got {value!r}", source)


COMPILATION_CACHE_ENV = "UMR_JAX_COMPILATION_CACHE"


def default_compilation_cache() -> str:
    """`$UMR_JAX_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/umr-jax/xla` (`~/.cache/umr-jax/xla`)."""
    if os.environ.get(COMPILATION_CACHE_ENV):
        return os.environ[COMPILATION_CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "umr-jax", "xla")


def enable_compilation_cache(path: str | os.PathLike | None) -> str | None:
    """Keep XLA's compiled programs in `path` (JAX's persistent compilation cache), so a program
    compiled once (a train step, a scorer bucket) loads in milliseconds in every later process
    and in every later iteration of a loop. `None`, "" or "off" leaves it off. On a pod give a
    path every host can reach (a GCS bucket works) or a local one per host. Returns the path."""
    if path is None or str(path).strip().lower() in ("", "off", "none", "0", "false"):
        return None
    import sys

    path = os.fspath(path)
    if "://" not in path:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot use it as the compilation cache: {err.strerror or err}", path) from None
    # Cache anything that took at least half a second to compile (JAX's default is 1 s), unless
    # JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise.
    min_time = float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 0.5))
    settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": min_time}
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:  # read by jax when it is imported; `umr-jax` does not import it before it is needed
        for name, value in settings.items():
            os.environ[name.upper()] = str(value)
    return path
