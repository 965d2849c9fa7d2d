"""The plugin registry: importers, frontends and devices, registered by plugins through pluggy.

Plugins are loaded lazily, on the first lookup (``importers()``, ``device("cpu")`` ...):

1. the core's own plugins, ``DEFAULT_PLUGINS`` (always loaded);
2. every entry point of the ``edgesnn`` group (importlib.metadata), the built-ins in plugins/
   included; ``EDGESNN_PLUGINS=name1,name2`` loads only the named entry points (an empty value:
   none of them);
3. plugins registered in code with ``register(plugin)``.

``EDGESNN_TRACE_HOOKS=1`` writes every hook call to stderr (pluggy's tracing).
Each plugin's ``edgesnn_register_*`` hooks are called with a ``register`` callback that knows the
plugin, so a duplicate name or an exception names the plugin that caused it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import sys
import threading
from typing import Callable, NamedTuple

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError  # noqa: F401 (edgesnn.plugins.UnknownNameError too)

DEFAULT_PLUGINS = ("edgesnn.default_plugin",)
ENTRY_POINT_GROUP = "edgesnn"
ONLY_PLUGINS_ENV = "EDGESNN_PLUGINS"
TRACE_HOOKS_ENV = "EDGESNN_TRACE_HOOKS"

# kind -> the hook that registers it
HOOK_OF_KIND = {
    "importer": "edgesnn_register_importers",
    "frontend": "edgesnn_register_frontends",
    "device": "edgesnn_register_devices",
}
KINDS = tuple(HOOK_OF_KIND)


class PluginRow(NamedTuple):
    """One loaded plugin, as `edgesnn plugins` lists it."""

    name: str
    kinds: tuple[str, ...]        # what it registered: "importer", "frontend", "device" (sorted)
    distribution: str | None      # the installed distribution it comes from; None if registered in code
    version: str | None


class Registration(NamedTuple):
    """One registered importer, frontend factory or device factory, and the plugin that registered it."""

    kind: str
    name: str
    obj: object
    plugin: str


class _State:
    """Everything loaded; replaced as a whole by reset()."""

    def __init__(self, manager: pluggy.PluginManager, origins: dict[str, tuple[str | None, str | None]]):
        self.manager = manager
        self.origins = origins                     # plugin name -> (distribution, version)
        self.entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}


_lock = threading.RLock()
_state: _State | None = None
_code_plugins: list[tuple[str, object]] = []   # (name, plugin) registered with register()


# -- loading -------------------------------------------------------------------------------------


def _loaded() -> _State:
    global _state
    with _lock:
        if _state is None:
            _state = _load_all()
        return _state


def reset() -> None:
    """Forget every loaded plugin and registration; the next lookup loads them again.

    Plugins registered in code with ``register()`` are forgotten too.  Tests use this after
    changing ``EDGESNN_PLUGINS`` or installing a distribution.
    """
    global _state
    with _lock:
        _state = None
        _code_plugins.clear()


def _load_all() -> _State:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_HOOKS_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        manager.trace.root.setwriter(lambda message: sys.stderr.write(message))
        manager.enable_tracing()
    state = _State(manager, {})
    for module_name in DEFAULT_PLUGINS:
        _add_plugin(state, importlib.import_module(module_name), module_name, _edgesnn_origin())
    for entry_point in _selected_entry_points():
        _add_plugin(state, _load_entry_point(entry_point), entry_point.name, _entry_point_origin(entry_point))
    for name, plugin in _code_plugins:
        _add_plugin(state, plugin, name, (None, None))
    _collect_registrations(state)
    return state


def _edgesnn_origin() -> tuple[str, str]:
    from . import __version__
    return "edgesnn", __version__


def _entry_point_origin(entry_point) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _describe_origin(origin: tuple[str | None, str | None]) -> str:
    distribution, version = origin
    if distribution is None:
        return "registered in code"
    return f"distribution {distribution} {version}"


def _selected_entry_points() -> list:
    """The entry points of the `edgesnn` group to load, sorted by name, filtered by EDGESNN_PLUGINS."""
    found = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    _check_unique_entry_points(found)
    only = os.environ.get(ONLY_PLUGINS_ENV)
    if only is None:
        return found
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    available = [ep.name for ep in found]
    missing = [name for name in wanted if name not in available]
    if missing:
        raise PluginError(f"{ONLY_PLUGINS_ENV}={only!r} names {', '.join(map(repr, missing))}, but no installed "
                          f"distribution has such an entry point in group {ENTRY_POINT_GROUP!r}; "
                          f"available: {', '.join(available) or '(none)'}")
    return [ep for ep in found if ep.name in wanted]


def _check_unique_entry_points(entry_points: list) -> None:
    seen: dict[str, object] = {}
    for entry_point in entry_points:
        if entry_point.name in seen:
            first = seen[entry_point.name]
            raise PluginError(f"two installed distributions declare the {ENTRY_POINT_GROUP!r} entry point "
                              f"{entry_point.name!r}: {first.value} ({_describe_origin(_entry_point_origin(first))}) "
                              f"and {entry_point.value} ({_describe_origin(_entry_point_origin(entry_point))}); "
                              f"uninstall one of them")
        seen[entry_point.name] = entry_point


def _load_entry_point(entry_point) -> object:
    try:
        return entry_point.load()
    except Exception as exc:
        raise PluginError(f"plugin {entry_point.name!r} ({_describe_origin(_entry_point_origin(entry_point))}) "
                          f"could not be imported from entry point {entry_point.value!r}: "
                          f"{type(exc).__name__}: {exc}") from exc


def _add_plugin(state: _State, plugin: object, name: str, origin: tuple[str | None, str | None]) -> None:
    """Register one plugin with pluggy, turning its validation errors into PluginError naming it."""
    where = f"plugin {name!r} ({_describe_origin(origin)})"
    manager = state.manager
    if manager.has_plugin(name):
        raise PluginError(f"{where}: a plugin named {name!r} is already loaded "
                          f"({_describe_origin(state.origins[name])}); choose another name")
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        if manager.has_plugin(name):
            manager.unregister(name=name)
        raise PluginError(f"{where} has a bad hook implementation: {exc}; "
                          f"the hooks and their arguments are in edgesnn/hookspecs.py") from exc
    except ValueError as exc:  # pluggy: the same object is already registered under another name
        raise PluginError(f"{where} could not be registered: {exc}") from exc
    state.origins[name] = origin
    state.manager.trace.root.get("plugins")("loaded", name, _describe_origin(origin))


def _collect_registrations(state: _State) -> None:
    """Call each plugin's register hooks, one plugin at a time, so errors can name the plugin."""
    plugins = state.manager.list_name_plugin()
    for plugin_name, plugin in plugins:
        others = [other for other_name, other in plugins if other_name != plugin_name]
        for kind, hook_name in HOOK_OF_KIND.items():
            caller = state.manager.subset_hook_caller(hook_name, remove_plugins=others)
            impls = caller.get_hookimpls()
            if not impls:
                continue
            if any(impl.plugin is not plugin for impl in impls):
                raise PluginError(f"plugin {plugin_name!r}: name the {hook_name} implementation after the "
                                  f"hook itself (pluggy's specname is not supported by edgesnn)")
            register = _Register(state, kind, plugin_name)
            try:
                caller(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {plugin_name!r} ({_describe_origin(state.origins[plugin_name])}) "
                                  f"raised {type(exc).__name__} in {hook_name}: {exc}") from exc


class _Register:
    """The ``register(name, obj)`` callback one plugin's hook receives; it knows the plugin it serves."""

    def __init__(self, state: _State, kind: str, plugin_name: str):
        self.state, self.kind, self.plugin_name = state, kind, plugin_name

    def __call__(self, name: str, obj: object) -> None:
        kind, entries = self.kind, self.state.entries[self.kind]
        where = f"plugin {self.plugin_name!r} ({_describe_origin(self.state.origins[self.plugin_name])})"
        if not isinstance(name, str) or not name or any(ch.isspace() or ch == "," for ch in name):
            raise PluginError(f"{where} registered a {kind} named {name!r}; "
                              f"a name must be a non-empty string without spaces or commas")
        _check_registered_object(where, kind, name, obj)
        if name in entries:
            first = entries[name].plugin
            raise PluginError(f"{kind} {name!r} is registered twice: by plugin {first!r} "
                              f"({_describe_origin(self.state.origins[first])}) and by {where}; "
                              f"uninstall one of them or load only one with {ONLY_PLUGINS_ENV}")
        entries[name] = Registration(kind, name, obj, self.plugin_name)

    def __repr__(self) -> str:  # shown by EDGESNN_TRACE_HOOKS
        return f"<register {self.kind}s for plugin {self.plugin_name!r}>"


def _check_registered_object(where: str, kind: str, name: str, obj: object) -> None:
    if kind == "importer":
        missing = [attr for attr in ("can_import", "load") if not callable(getattr(obj, attr, None))]
        if missing:
            raise PluginError(f"{where} registered importer {name!r} as {obj!r}, which lacks the methods "
                              f"{', '.join(missing)}; an importer needs name, extensions, can_import(source) "
                              f"and load(source, **options)")
    elif not callable(obj):
        raise PluginError(f"{where} registered {kind} {name!r} as {obj!r}, which is not callable; "
                          f"register a factory (a class or function) taking keyword arguments")


# -- registering in code -------------------------------------------------------------------------


def register(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (a module, class or instance with hookimpls) in code and return its name.

    The plugin's hooks run at once, so a bad signature or a duplicate name raises ``PluginError``
    here (and the plugin is not kept).  ``reset()`` forgets it.
    """
    name = name or getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin)}"
    global _state
    with _lock:
        _code_plugins.append((name, plugin))
        try:
            _state = _load_all()
        except PluginError:
            _code_plugins.pop()
            raise
    return name


def unregister(name: str) -> None:
    """Remove a plugin registered with ``register()``; its importers, frontends and devices go with it."""
    global _state
    with _lock:
        names = [plugin_name for plugin_name, _ in _code_plugins]
        if name not in names:
            raise UnknownNameError(f"no plugin named {name!r} was registered in code; "
                                   f"registered in code: {', '.join(names) or '(none)'}")
        del _code_plugins[names.index(name)]
        _state = None


def state_token() -> object:
    """An object that changes whenever plugins are loaded, registered, unregistered or reset (None before
    the first load): caches of registry lookups (edgesnn.devices.resolve_device) compare it."""
    return _state


def manager() -> pluggy.PluginManager:
    """The loaded pluggy PluginManager (loads the plugins first)."""
    return _loaded().manager


# -- lookups -------------------------------------------------------------------------------------


def registrations(kind: str | None = None) -> list[Registration]:
    """Every registration (of one kind, or all), sorted by kind and name."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    state = _loaded()
    kinds = KINDS if kind is None else (kind,)
    return [state.entries[k][name] for k in kinds for name in sorted(state.entries[k])]


def list_plugins() -> list[PluginRow]:
    """One row per loaded plugin (name, kinds, distribution, version), in load order."""
    state = _loaded()
    rows = []
    for name, _plugin in state.manager.list_name_plugin():
        kinds = tuple(sorted({r.kind for k in KINDS for r in state.entries[k].values() if r.plugin == name}))
        distribution, version = state.origins[name]
        rows.append(PluginRow(name, kinds, distribution, version))
    return rows


def _lookup(kind: str, name: str) -> Registration:
    entries = _loaded().entries[kind]
    if name in entries:
        return entries[name]
    available = sorted(entries)
    message = f"no {kind} named {name!r}; registered {kind}s: {', '.join(available) or '(none)'}"
    close = difflib.get_close_matches(str(name), available, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    if os.environ.get(ONLY_PLUGINS_ENV) is not None:
        message += f"; note {ONLY_PLUGINS_ENV}={os.environ[ONLY_PLUGINS_ENV]!r} limits which plugins load"
    raise UnknownNameError(message)


def get_importer(name: str) -> object:
    """The importer registered as ``name`` (``UnknownNameError`` lists the registered ones)."""
    return _lookup("importer", name).obj


def get_frontend(name: str) -> Callable[..., object]:
    """The frontend factory registered as ``name``; call it with the frontend's config."""
    return _lookup("frontend", name).obj


def get_device(name: str) -> Callable[..., object]:
    """The device factory registered as ``name``; call it with the device's options."""
    return _lookup("device", name).obj


def importers() -> list[str]:
    """Names of the registered importers, sorted."""
    return sorted(_loaded().entries["importer"])


def frontends() -> list[str]:
    """Names of the registered frontends, sorted."""
    return sorted(_loaded().entries["frontend"])


def devices() -> list[str]:
    """Names of the registered devices, sorted."""
    return sorted(_loaded().entries["device"])


def frontend(name: str, **config) -> object:
    """Build the frontend registered as ``name`` with ``config`` (``es.frontend("image", size=28)``)."""
    return _build("frontend", name, get_frontend(name), config)


def device(name: str, **options) -> object:
    """Build the device registered as ``name`` with ``options`` (``es.device("cpu")``)."""
    return _build("device", name, get_device(name), options)


def _build(kind: str, name: str, factory: Callable[..., object], options: dict) -> object:
    """``factory(**options)``; an option it does not take is a TypeError naming those it does."""
    problem = unknown_options(kind, name, factory, options)
    if problem:
        raise TypeError(problem)
    return factory(**options)


def unknown_options(kind: str, name: str, factory: Callable[..., object], options: dict) -> str | None:
    """What is wrong with ``options`` for ``factory`` (settings it has no parameter for, and the ones it
    has), or None; factories without a readable signature or with ``**options`` take anything."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    unknown = sorted(set(options) - set(parameters))
    if not unknown:
        return None
    known = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return f"the {kind} {name!r} has no setting {', '.join(map(repr, unknown))}; it takes {', '.join(known) or 'none'}"


__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "ONLY_PLUGINS_ENV", "TRACE_HOOKS_ENV", "KINDS",
           "UnknownNameError", "PluginRow", "Registration", "register", "unregister", "reset", "manager",
           "registrations", "list_plugins", "get_importer", "get_frontend", "get_device",
           "importers", "frontends", "devices", "frontend", "device"]
