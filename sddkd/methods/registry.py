"""The method registry: every module of `sddkd.methods` that defines `METHOD` is a base method.

Adding a method is adding a module (see docs/adding_a_method.md): config validation, the engine, `analyze`,
report order and labels and the README's table all read this registry. Each distilling base method `X` gets its
four variants (`X`, `X_lskd`, `sdd_X`, `sdd_X_lskd`), one typed config class whose `name` is exactly those four.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Literal

from pydantic import BaseModel, create_model

from sddkd.methods.base import Method, parse_name, variant_names

_NOT_METHODS = {"base", "registry"}


@cache
def base_methods() -> tuple[Method, ...]:
    """Every base method, in report order."""
    import sddkd.methods as package

    found: list[Method] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            found.append(method)
    bases = [m.base for m in found]
    duplicated = sorted({b for b in bases if bases.count(b) > 1})
    if duplicated:
        raise RuntimeError(f"two method modules define the base method {duplicated}")
    return tuple(sorted(found, key=lambda m: (m.order, m.base)))


def names_of(method: Method) -> tuple[str, ...]:
    return variant_names(method.base) if method.distills else (method.base,)


@cache
def method_names() -> tuple[str, ...]:
    """Every method name a config may use, in report order: vanilla, kd, kd_lskd, sdd_kd, sdd_kd_lskd, ctkd, ..."""
    return tuple(name for method in base_methods() for name in names_of(method))


@cache
def config_classes() -> dict[str, type[BaseModel]]:
    """Base name -> its config class with `name` narrowed to its variants (`KDMethod` for kd)."""
    classes: dict[str, type[BaseModel]] = {}
    for method in base_methods():
        if not method.distills:  # its config already names itself
            classes[method.base] = method.config
            continue
        names = names_of(method)
        title = method.config.__name__.removesuffix("Config") + "Method"
        classes[method.base] = create_model(
            title, __base__=method.config, __module__=method.config.__module__, name=(Literal[names], ...)
        )
        classes[method.base].__doc__ = method.config.__doc__
    return classes


@cache
def config_class_by_name() -> dict[str, type[BaseModel]]:
    """Full method name (`sdd_nkd_lskd`) -> its config class."""
    return {name: config_classes()[m.base] for m in base_methods() for name in names_of(m)}


def method_of(name: str) -> Method:
    """The base method of a full name: `sdd_kd_lskd` -> KD."""
    base = parse_name(name)[0] if name not in {m.base for m in base_methods()} else name
    for method in base_methods():
        if method.base == base:
            return method
    raise KeyError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")


def label_of(name: str) -> str:
    """How reports write a method: `sdd_dkd_lskd` -> "SD-DKD+LS"."""
    method = method_of(name)
    if not method.distills:
        return method.label
    _, sdd, lskd = parse_name(name)
    return ("SD-" if sdd else "") + method.label + ("+LS" if lskd else "")


def report_rank(name: str) -> tuple[int, int, int]:
    """Sort key of a method in reports: every single-scale method before the SDD ones (vanilla, KD, KD+LS, CTKD,
    ..., then SD-KD, SD-KD+LS, ...), base methods by their `order`; unknown names last."""
    if name not in method_names():
        return (2, 0, 0)
    method = method_of(name)
    _, sdd, lskd = parse_name(name)
    sdd, lskd = sdd and method.distills, lskd and method.distills
    return (int(sdd), method.order, int(lskd))


def report_order() -> tuple[str, ...]:
    """Every method name in report order."""
    return tuple(sorted(method_names(), key=report_rank))
