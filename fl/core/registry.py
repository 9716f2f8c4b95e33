"""Plug-in registries: one per plug-in point, generic, torch-free (pydantic only).

A :class:`Registry` holds, per implementation, the name YAML uses (its ``kind``), a small
frozen pydantic config class (``extra="forbid"``, typed fields with ranges and
descriptions), and the implementation itself or a lazy ``"module:attr"`` reference, so
that validating a scenario never imports what running it needs (torch, for instance).

:meth:`Registry.union` turns a registry into the type of a YAML field that names one of its
kinds: a pydantic discriminated union of one spec class per kind (the config plus the
``kind`` tag), so that pydantic's own validation checks every option's type and range, its
errors carry the key path, and ``model_json_schema()`` lists every option of every kind.
A bare string is shorthand for ``{kind: name}``.

Registries are used by fl (algorithms, partitioners) and by sim (MAC, selection, and the
radio models' configs); fl stays free of sim, so the class lives here.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Generic, Iterator, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, Field, create_model
from pydantic_core import PydanticCustomError

__all__ = ["Registry", "KindUnion", "kind_union_of"]

T = TypeVar("T")


@dataclass
class _Entry:
    config: type[BaseModel]
    impl: Any  # the implementation, or "module:attr" until first use


class Registry(Generic[T]):
    """Implementations of one plug-in point, by name.

    Args:
        what: what one implementation is called in messages (``"MAC policy"``).
        prefix: prefix of the generated spec class names (``"Mac"`` -> ``MacEqualShare``).
    """

    def __init__(self, what: str, prefix: str) -> None:
        self.what = what
        self.prefix = prefix
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, config: type[BaseModel], impl: Any) -> None:
        """Register ``impl`` (or a lazy ``"module:attr"`` reference) under ``name``."""
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TypeError(f"The 'config' of {self.what} {name!r} must be a pydantic model class. "
                            f"Got {config!r} instead.")
        self._entries[name] = _Entry(config, impl)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"Unknown {self.what} {name!r}. Known: {', '.join(self.names())}.") from None

    def config(self, name: str) -> type[BaseModel]:
        """The config class of ``name`` (KeyError naming the known ones otherwise)."""
        return self._entry(name).config

    def get(self, name: str) -> T:
        """The implementation of ``name``, imported on first use.

        Raises KeyError for an unknown name and NotImplementedError when a lazy reference
        cannot be imported (a missing optional dependency).
        """
        entry = self._entry(name)
        if isinstance(entry.impl, str):
            module, _, attr = entry.impl.partition(":")
            try:
                entry.impl = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise NotImplementedError(
                    f"The {self.what} {name!r} is registered but not available ({exc}).") from exc
        return entry.impl

    def reference(self, name: str) -> Any:
        """The implementation if loaded, else its ``"module:attr"`` reference (no import)."""
        return self._entry(name).impl

    def items(self) -> list[tuple[str, type[BaseModel]]]:
        """``(name, config class)`` pairs, sorted by name."""
        return [(n, self._entries[n].config) for n in self.names()]

    def union(self, module: str, *, key: str = "kind", default: str | None = None,
              spec: Callable[[str, type[BaseModel]], type[BaseModel]] | None = None) -> Any:
        """The type of a YAML field naming one of the kinds (see the module docstring).

        Args:
            module: the module the generated spec classes belong to; they are set as its
                attributes, so that they pickle (e.g. ``"sim.scenario"``).
            key: the discriminating field (``kind``; ``algorithm`` for ``fl``).
            default: the kind of a mapping that has no ``key`` (None: ``key`` is required).
            spec: builds the spec class of one kind from its name and config (default: a
                subclass of the config with ``key: Literal[name]`` added, unless the config
                already declares that tag).
        """
        make = spec or (lambda name, cfg: self._spec(name, cfg, module))
        members = {name: make(name, cfg) for name, cfg in self.items()}
        home = sys.modules[module]
        for cls in members.values():
            if cls.__module__ == module:
                setattr(home, cls.__name__, cls)
        info = KindUnion(self.what, key, default, members)
        return Annotated[Union[tuple(members.values())], Field(discriminator=key),
                         BeforeValidator(info.before), info]

    def _spec(self, name: str, config: type[BaseModel], module: str) -> type[BaseModel]:
        ann = config.model_fields.get("kind")
        if ann is not None and ann.annotation == Literal[name]:
            return config  # the config carries its own tag (fl.lm.partition)
        return create_model(self.prefix + _camel(name), __base__=(config, _SpecMixin),
                            __module__=module, __doc__=config.__doc__,
                            kind=(Literal[name], Field(name, description=f"{self.what}: {name}.")))


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name))


class _SpecMixin:
    """What a generated spec adds to its config."""

    @property
    def options(self) -> dict[str, Any]:
        """The options given explicitly (the ``kind`` tag left out), as keyword arguments
        for the implementation's builder."""
        fields = self.model_fields_set  # type: ignore[attr-defined]
        return {k: getattr(self, k) for k in fields if k != "kind"}


class KindUnion:
    """Metadata of a registry union (also its ``Annotated`` marker): the discriminating key,
    the default kind, the spec class of each kind; it expands shorthands before pydantic
    picks the member, and adds the shorthand to the JSON schema."""

    def __init__(self, what: str, key: str, default: str | None,
                 members: dict[str, type[BaseModel]]) -> None:
        self.what = what
        self.key = key
        self.default = default
        self.members = members

    def kind_of(self, value: Any) -> str | None:
        """The kind a raw YAML value names (after shorthand and default), or None."""
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return value.get(self.key, self.default)
        if isinstance(value, BaseModel):
            return getattr(value, self.key, None)
        return None

    def member(self, value: Any) -> type[BaseModel] | None:
        """The spec class the raw value selects (None when its kind is unknown)."""
        kind = self.kind_of(value)
        return self.members.get(kind) if isinstance(kind, str) else None

    def before(self, value: Any) -> Any:
        if isinstance(value, str):
            value = {self.key: value}
        if not isinstance(value, dict):
            return value  # pydantic names the type problem
        if self.key not in value:
            if self.default is None:
                raise PydanticCustomError(
                    "missing_kind", "required key '{key}' is missing; use one of: {known}",
                    {"key": self.key, "what": self.what, "known": ", ".join(self.members)})
            value = {self.key: self.default, **value}
        kind = value[self.key]
        if not isinstance(kind, str) or kind not in self.members:
            raise PydanticCustomError(
                "unknown_kind", "unknown {what} '{kind}'; use one of: {known}",
                {"key": self.key, "what": self.what, "kind": kind, "known": ", ".join(self.members)})
        return value

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        if self.key != "kind":
            return schema
        short = {"type": "string", "enum": list(self.members),
                 "description": f"Shorthand for {{kind: <name>}} (a {self.what} without options)."}
        return {"anyOf": [short, schema]}


def kind_union_of(annotation: Any) -> KindUnion | None:
    """The :class:`KindUnion` marker of a field annotation made by :meth:`Registry.union`."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, KindUnion):
            return meta
    return None
