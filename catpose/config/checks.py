"""Checks of config values: types of YAML values, ranges of settings, the device."""

from __future__ import annotations

from pathlib import Path

from catpose.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# validation of values that do not come from the typed command line (YAML files)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value, tp, field_name: str, source: str):
    """value as type tp (the dataclass field's annotation), or a ConfigError."""
    import dataclasses
    import types
    import typing


    def fail(expected: str):
        got = f"{value!r} (a {type(value).__name__})"
        raise ConfigError(source, f"expected {expected}, got {got}", field=field_name)

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail(" or ".join(_type_name(a) for a in args))
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(value, a, field_name, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            fail("one of " + ", ".join(repr(c) for c in choices))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail(f"a section (mapping of {tp.__name__} fields)")
        return apply_dict(tp(), value, source, field_name)
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0] if args else typing.Any
        if isinstance(value, str):
            fail(f"a list (write [{value}] for one item)")
        if not isinstance(value, (list, tuple)):
            fail("a list")
        return tuple(_check_value(v, item, f"{field_name}[{i}]", source) for i, v in enumerate(value))
    if tp is typing.Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            fail("a path (a string)")
        return Path(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return value
    return value


def _moved(obj, name: str) -> str:
    """Where a field of an older catpose is now: a setting that moved into a nested section (alpha of
    the alignment into search, clean_mode into cleaning: {mode}), said as ; now ...."""
    import dataclasses

    for f in dataclasses.fields(obj):
        sub = getattr(obj, f.name)
        if dataclasses.is_dataclass(sub):
            inner = {g.name for g in dataclasses.fields(sub)}
            for short in (name, name.removeprefix(f"{f.name.removesuffix('ing')}_")):
                if short in inner:
                    return f" (now in the section {f.name}: write {f.name}: {{{short}: ...}})"
    return ""


def apply_dict(obj, values: dict, source: str, prefix: str = ""):
    """A copy of dataclass obj with values (nested dicts for nested dataclasses) applied, each
    checked against the field's type; unknown fields and wrong types raise
    catpose.errors.ConfigError naming source (the YAML file) and the dotted field."""
    import dataclasses
    import typing


    if not isinstance(values, dict):
        raise ConfigError(source, "expected a mapping of fields, got "
                                  f"{type(values).__name__}", field=prefix or None)
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for k, v in values.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(source, f"unknown field{_moved(obj, str(k))}; known fields"
                              f"{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))}", field=name)
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            changes[k] = apply_dict(cur, v, source, name)  # keeps the section's own defaults
        else:
            changes[k] = _check_value(v, hints[k], name, source)
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------------------------------
# ranges of the settings: checked once, before any work, for flags (catpose.cli) and YAML files alike
# (catpose.run.config.check_config); the table says what each field allows, check_settings applies it


def _each(test):
    return lambda v: all(test(x) for x in v)


_SHARE = (lambda v: 0.0 <= v <= 1.0, "[0, 1]")

SETTING_RANGES: dict[str, tuple] = {
    # "Class.field" (that config's field, wherever it is nested: SearchConfig.alpha is align.search.alpha and
    # sweep.trial.alpha) or "field" (a field of that name in any config): (test of the value, the allowed
    # range in words)
    "SearchConfig.alpha": _SHARE,
    "SweepConfig.alphas": (_each(lambda v: 0.0 <= v <= 1.0), "values in [0, 1]"),
    "SearchConfig.tau": (lambda v: v > 0, "> 0"),
    "SweepConfig.taus": (_each(lambda v: v > 0), "values > 0"),
    "SearchConfig.rotations": (lambda v: v >= 1, ">= 1"),
    "SearchConfig.coarse_vertices": (lambda v: v >= 1, ">= 1"),
    "CleaningConfig.vote": _SHARE,
    "CleaningConfig.view_share": _SHARE,
    "vertices": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "workers": (lambda v: v >= 0, ">= 0 (0: in this process)"),
    "num_workers": (lambda v: v >= 0, ">= 0 (0: auto)"),
    "cloud_points": (lambda v: v >= 0, ">= 0 (0: no cap)"),
}


def check_device(value: str) -> None:
    """Raises catpose.errors.ConfigError unless value names a device this process can use:
    auto, cpu, cuda (a GPU is visible) or cuda:N (GPU N exists). auto always passes
    (it falls back to the CPU). With a cluster named (RAY_ADDRESS) and no GPU here, cuda passes:
    the GPUs may be on other nodes, where the stages' Ray tasks and workers ask for them."""
    import os
    import re

    if value in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", str(value))
    if m is None:
        raise ConfigError("flags", f"unknown device {value!r}; use auto, cpu, cuda or cuda:N", field="device")
    import torch

    n = torch.cuda.device_count()
    if n == 0 and os.environ.get("RAY_ADDRESS"):
        return
    if n == 0:
        raise ConfigError("flags", f"device {value!r} asked for, but this machine has no usable CUDA GPU "
                                   "(torch sees none); use auto or cpu", field="device")
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ConfigError("flags", f"device {value!r}: this machine has {n} GPU(s), cuda:0 to cuda:{n - 1}",
                          field="device")


def check_settings(cfg, source: str = "flags", prefix: str = "") -> None:
    """Checks every field of dataclass cfg (and of its nested sections) that SETTING_RANGES
    names, and its device; the first one out of range is a catpose.errors.ConfigError
    naming source, the dotted field, the value and the allowed range."""
    import dataclasses

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(v):
            check_settings(v, source, name)
        elif f.name == "device" and isinstance(v, str):
            try:
                check_device(v)
            except ConfigError as e:
                raise ConfigError(source, str(e).split(": field 'device': ", 1)[-1], field=name) from None
        elif (rule := SETTING_RANGES.get(f"{type(cfg).__name__}.{f.name}", SETTING_RANGES.get(f.name))) \
                and v is not None:
            test, allowed = rule
            try:
                ok = test(v)
            except TypeError:
                ok = False
            if not ok:
                raise ConfigError(source, f"{v!r} is out of range; allowed: {allowed}", field=name)
