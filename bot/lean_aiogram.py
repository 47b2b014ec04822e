"""Import aiogram with its Telegram types' validators built on first use, not at import.

aiogram's ~400 types are pydantic models declared `defer_build=True`, but `aiogram.types`
then calls `model_rebuild()` on every one of them to resolve their forward references, which
builds all their validators at once: 3 s and ~150 MB at import (aiogram 3.31, pydantic 2.13;
aiogram issue #1513). A bot uses a dozen of them. Here the rebuild of a deferred type only
makes its forward references resolvable, the way pydantic resolves them everywhere: the names
its annotations use, which aiogram imports under `TYPE_CHECKING` only, are added to its
module's globals. pydantic then builds a type's validator the first time it is used, alone or
inside another model (`Response[Message]`). aiogram's ~190 methods, which it builds at once
too, are made `defer_build` while they are defined. Measured: the bot's import drops from
~180 MB and 3.3 s to ~75 MB and 1 s (BENCHMARKS.md); `tests/test_lean_aiogram.py` builds
every type and method.

Only `import_aiogram()` patches anything, and only while aiogram is first imported.
`build_validators()` builds, at start-up, what the first update would otherwise wait for.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from pydantic._internal._config import ConfigWrapper

_NAME = re.compile(r"[A-Za-z_]\w*")


def import_aiogram() -> None:
    """Import `aiogram`, deferring its types' validators. A no-op once aiogram is imported."""
    if "aiogram.types" in sys.modules:
        return
    with _rebuilds_deferred():
        importlib.import_module("aiogram")


@contextmanager
def _rebuilds_deferred() -> Iterator[None]:
    original = BaseModel.__dict__["model_rebuild"]
    rebuild = original.__func__

    def model_rebuild(
        cls: type[BaseModel],
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Mapping[str, Any] | None = None,
    ) -> bool | None:
        if _types_namespace is not None and not force and cls.model_config.get("defer_build"):
            _make_resolvable(cls, _types_namespace)
            return None
        result: bool | None = rebuild(
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth + 1,  # this frame is one more
            _types_namespace=_types_namespace,
        )
        return result

    original_for_model = ConfigWrapper.__dict__["for_model"]

    def for_model(
        cls: type[ConfigWrapper], bases: Any, namespace: Any, *rest: Any
    ) -> ConfigWrapper:
        # (bases, namespace, [raw_annotations,] kwargs): the third argument is pydantic 2.11's.
        wrapper: ConfigWrapper = original_for_model.__func__(cls, bases, namespace, *rest)
        if str(namespace.get("__module__", "")).startswith("aiogram.methods."):
            wrapper.config_dict["defer_build"] = True
        return wrapper

    BaseModel.model_rebuild = classmethod(model_rebuild)  # type: ignore[assignment,method-assign]
    ConfigWrapper.for_model = classmethod(for_model)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        BaseModel.model_rebuild = original  # type: ignore[method-assign]
        ConfigWrapper.for_model = original_for_model  # type: ignore[method-assign]


def _make_resolvable(cls: type[BaseModel], names: Mapping[str, Any]) -> None:
    """Add to `cls`'s module the names its annotations (and its bases') refer to but the
    module lacks. Only the names used, not the whole namespace: one copy of ~400 names in
    each of ~400 modules would cost megabytes."""
    module = vars(sys.modules[cls.__module__])
    for klass in cls.__mro__:
        for annotation in vars(klass).get("__annotations__", {}).values():
            for name in _NAME.findall(str(annotation)):
                if name not in module and name in names:
                    module[name] = names[name]


def build_validators(models: Iterable[type[BaseModel]]) -> list[type[BaseModel]]:
    """Build these models now and, for a Bot API method, the model of its response
    (`Response[Message]`), the types in them included: for the calls every answer makes and
    the types the bot builds itself, so that the first update does not wait for them (~0.4 s
    of CPU, measured).

    Keep the returned models for as long as the bot runs: pydantic caches a parametrized
    model like `Response[Message]` only weakly, and aiogram asks for it on every call, so
    once the garbage collector has taken it the next call builds it again (~0.1-0.2 s each,
    measured; stock aiogram does the same)."""
    # Not at the top: this module runs before aiogram is imported.
    from aiogram.methods import TelegramMethod
    from aiogram.methods.base import Response

    built: list[type[BaseModel]] = []
    for model in models:
        model.model_rebuild()
        built.append(model)
        if issubclass(model, TelegramMethod):
            response: type[BaseModel] = Response[model.__returning__]  # type: ignore[name-defined]
            response.model_rebuild()
            built.append(response)
    return built
