"""The component contract: how a pipeline step is saved to YAML and rebuilt from it.

A savable step implements three things (structurally — no base class):

``component_name``
    A class attribute: the name a pipeline file uses for the class (``type:``).
``to_config() -> dict``
    The step's constructor parameters as plain data (str, int, float, bool, None, lists and
    mappings of those). Nothing else: a file never names an import path and is never unpickled.
``from_config(config, context) -> instance`` (a classmethod)
    The inverse of ``to_config``. ``context`` is a :class:`LoadContext`: the shared resources
    the step cannot save itself.

Registration happens where a class is defined (the idea of Haystack's ``@component``)::

    @component
    class MyRetriever:
        component_name = "my_retriever"
        def to_config(self) -> dict[str, Any]: ...
        @classmethod
        def from_config(cls, config, context=None): ...

Decisions, and why:

- **Components own their configuration.** Each class turns its own parameters into data and
  back, so the registry restates no constructor defaults and knows no component's parameters;
  ``from_config`` passes the saved keys to the constructor, which keeps the defaults in one place.
- **The dependency direction is upward only.** ``ragkit.pipeline`` imports nothing from
  ``ragkit.rag``, ``ragkit.server`` or ``ragkit.cli``: classes above it register themselves with
  :func:`component` when their module is imported (``import ragkit`` imports them all). The
  ``prompts`` package sits below ragkit and imports nothing from it, so its steps implement the
  same three members structurally and ``prompts.COMPONENTS`` lists them; ragkit's registry
  imports that tuple and registers each class.
- **Non-serialisable arguments are re-attached, not saved.** A generator, an open index, an
  embedding function or a token counter cannot be written to YAML, and several steps share
  them (the prompt builder's budget *is* the generator's tokenizer, the few-shot selector embeds
  with the retriever's embedder). They travel in the :class:`LoadContext` under well-known
  names:

  ``generator``
      The pipeline's generator backend. A pipeline file may carry it in its ``resources``
      section (the generator's config, written by ``save_pipeline(..., resources=...)``: the RAG
      pipeline always does), the caller may pass a live one in the load context, and a
      ``generator`` step whose saved model matches it re-uses it (else it builds and provides
      its own). Token counters are re-derived from it.
  ``index`` / ``embed``
      The first retriever's open index and its embedder's ``encode`` (provided by the retriever
      when it is built; a caller's live index for the same location is re-used).
  ``schemas``
      A mapping from name to pydantic model, for structured-output steps.

  A resource given by the caller always wins over one built from the file. A step that needs a
  resource nobody provides fails to load with a message naming the resource; a step that can do
  without one until later (the prompt builder's budget, in files from before the
  ``resources`` section existed) asks to be bound when it appears (:meth:`LoadContext.bind`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Protocol, TypeVar, overload, runtime_checkable

from ragkit.pipeline.step import PipelineError, step_name

TraceSlot = Literal["prompt", "notes"]
"""Where a step output goes in the run's trace: the exact final prompt, or the notes."""


@runtime_checkable
class Component(Protocol):
    """A pipeline step that can be saved to and rebuilt from a pipeline file."""

    component_name: ClassVar[str]

    def to_config(self) -> dict[str, Any]: ...

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> Any: ...


Factory = Callable[[dict[str, Any]], Any]
"""A user factory: ``factory(params) -> step`` (see :func:`register_component`)."""

_BUILDERS: dict[str, Callable[[dict[str, Any], LoadContext], Any]] = {}
_CLASSES: dict[str, type] = {}
_NAMES: dict[type, str] = {}


class LoadContext:
    """Shared resources for the components of one pipeline load (see the module docstring)."""

    def __init__(self, resources: Mapping[str, Any] | None = None) -> None:
        self._resources: dict[str, Any] = dict(resources or {})
        self._pending: dict[str, list[Callable[[Any], None]]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._resources

    def get(self, name: str, default: Any = None) -> Any:
        return self._resources.get(name, default)

    def require(self, name: str, needed_by: str) -> Any:
        """The resource ``name``, or a :class:`PipelineError` saying who needed it."""
        if name not in self._resources:
            raise PipelineError(
                f"{needed_by} needs the shared resource {name!r}, which neither the pipeline "
                f"file's resources nor an earlier step provides; pass it when loading "
                f"(context={{{name!r}: ...}})"
            )
        return self._resources[name]

    def provide(self, name: str, value: Any) -> Any:
        """Offer ``value`` as ``name``; the first provider wins. Returns the resource in effect."""
        if name in self._resources:
            return self._resources[name]
        self._resources[name] = value
        for attach in self._pending.pop(name, []):
            attach(value)
        return value

    def bind(self, name: str, attach: Callable[[Any], None]) -> None:
        """Call ``attach(resource)`` now if ``name`` is available, else when it is provided."""
        if name in self._resources:
            attach(self._resources[name])
        else:
            self._pending.setdefault(name, []).append(attach)

    def build(self, spec: Any, where: str = "component") -> Any:
        """A nested component from its ``{"type": ..., "params": ...}`` mapping."""
        return build_component(spec, self, where)


C = TypeVar("C", bound=type)


@overload
def component(cls: C, /) -> C: ...


@overload
def component(*, trace_outputs: Mapping[str, TraceSlot] | None = None) -> Callable[[C], C]: ...


def component(cls: Any = None, /, *, trace_outputs: Mapping[str, TraceSlot] | None = None) -> Any:
    """Class decorator: check the component contract and register the class by its name.

    ``trace_outputs`` maps output fields to trace slots (``{"prompt_text": "prompt"}``): it is
    stored as the class's ``trace_outputs``, which :class:`~ragkit.pipeline.Pipeline` reads to
    fill the trace (a class may also set that attribute itself).
    """

    def register(target: C) -> C:
        if trace_outputs is not None:
            target.trace_outputs = dict(trace_outputs)  # type: ignore[attr-defined]
        register_class(target)
        return target

    return register(cls) if cls is not None else register


def register_class(cls: type) -> None:
    """Register a class implementing the component contract under its ``component_name``."""
    name = getattr(cls, "component_name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no component_name (a non-empty str class attribute)")
    if not callable(getattr(cls, "to_config", None)):
        raise TypeError(f"component {name!r} ({cls.__name__}) has no to_config()")
    from_config = inspect.getattr_static(cls, "from_config", None)
    if not isinstance(from_config, classmethod):
        raise TypeError(f"component {name!r} ({cls.__name__}) has no from_config() classmethod")
    known = _CLASSES.get(name)
    if known is not None and known is not cls and _qualname(known) != _qualname(cls):
        raise TypeError(
            f"component name {name!r} is taken by {_qualname(known)}; {_qualname(cls)} needs another"
        )
    _BUILDERS[name] = lambda params, context: cls.from_config(params, context)  # type: ignore[attr-defined]
    _CLASSES[name] = cls
    _NAMES[cls] = name


def register_component(name: str, factory: Factory | type) -> None:
    """Make ``name`` loadable from YAML, replacing any earlier registration of that name.

    ``factory(params)`` builds the step; a class with a ``from_config`` classmethod is called as
    ``from_config(params, context)`` instead. The step saves as ``name`` when its class was
    registered here or when it carries ``component_name`` and ``to_config()``.
    """
    if isinstance(factory, type) and isinstance(
        inspect.getattr_static(factory, "from_config", None), classmethod
    ):
        cls = factory
        _BUILDERS[name] = lambda params, context: cls.from_config(params, context)  # type: ignore[attr-defined]
        _CLASSES[name] = cls
        _NAMES[cls] = name
        return
    _CLASSES.pop(name, None)
    _BUILDERS[name] = lambda params, context: factory(params)


def registered_names() -> list[str]:
    return sorted(_BUILDERS)


def component_class(name: str) -> type | None:
    """The class registered as ``name`` (None for a name registered with a factory function)."""
    return _CLASSES.get(name)


def name_of(step: Any) -> str:
    """The name a step is saved under: its registered class's, else its ``component_name``."""
    registered = _NAMES.get(type(step))
    if registered is not None:
        return registered
    name = getattr(step, "component_name", None)
    if not isinstance(name, str) or not callable(getattr(step, "to_config", None)):
        raise PipelineError(
            f"step {step_name(step)!r} cannot be saved: it has no component_name/to_config()"
        )
    return name


def component_spec(step: Any) -> dict[str, Any]:
    """``{"type": name, "params": config}`` of a step (a pipeline file's entry, or a nested one)."""
    name = name_of(step)
    try:
        params = step.to_config()
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"step {step_name(step)!r} cannot be saved: {exc}") from None
    return {"type": name, "params": plain(params, f"{name}.params")}


def build_component(spec: Any, context: LoadContext, where: str = "component") -> Any:
    """Build one component from its ``{"type": ..., "params": ...}`` mapping."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise PipelineError(f"{where} must be a mapping with a 'type'")
    kind = spec["type"]
    builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise PipelineError(
            f"{where}: unknown component type {kind!r} (registered: {', '.join(sorted(_BUILDERS))})"
        )
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise PipelineError(f"{where} ({kind}): params must be a mapping")
    try:
        return builder(dict(params), context)
    except PipelineError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise PipelineError(f"{where} ({kind}): {exc}") from None


def plain(value: Any, where: str) -> Any:
    """``value`` as YAML-safe plain data (tuples become lists); anything else is refused."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PipelineError(f"{where}: key {key!r} is not a string")
            out[key] = plain(item, f"{where}.{key}")
        return out
    raise PipelineError(
        f"{where} is a {type(value).__name__}, which a pipeline file cannot hold (plain data only)"
    )


def trace_outputs_of(step: Any) -> Mapping[str, TraceSlot]:
    """The step's declared ``{output field: trace slot}`` (empty when it declares none)."""
    declared = getattr(step, "trace_outputs", None)
    return declared if isinstance(declared, Mapping) else {}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
