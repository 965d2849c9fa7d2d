"""Every hook a plugin can implement, in one place (documented for plugin authors in docs/plugins.md).

A plugin is a module (or any object) with functions decorated by ``edgesnn.hookimpl`` and named
after a hook below; it is found through the ``edgesnn`` entry-point group::

    # pyproject.toml of the plugin's distribution
    [project.entry-points.edgesnn]
    myformat = "edgesnn_myformat"

Every hook is a ``register_*`` hook: it receives a ``register(name, obj)`` callback and calls it
once per thing it provides.  A plugin never sees the registry itself, and an implementation may
take fewer arguments than the spec, so arguments added to a hook later break no plugin.

Hooks are called once per plugin, when the registry is first used (``edgesnn.importers()``,
``edgesnn.device("cpu")``, ``edgesnn plugins`` ...), never at ``import edgesnn``.
None of them is ``firstresult``: every plugin's implementation runs and return values are ignored.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "edgesnn"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- converting: source models come in -----------------------------------------------------------


@hookspec
def edgesnn_register_importers(register):
    """Register importers: readers of a model format (Keras, ONNX, PyTorch ...) into a float Graph.

    Called once per plugin when the registry is first used; return value ignored.

    :param register: ``register(name, importer)``. ``name`` (str) is the importer's unique name,
        e.g. ``"onnx"``; a second plugin registering the same name is a ``PluginError``.
        ``importer`` is an object with

        - ``name`` (str): the same name;
        - ``extensions`` (tuple of str): file suffixes it reads, e.g. ``(".onnx",)``;
        - ``can_import(source) -> bool``: whether it can read ``source`` (a path or an in-memory
          model object); must not raise for foreign sources;
        - ``load(source, **options) -> edgesnn.graph.Graph``: read ``source`` into a float Graph.
        - optionally ``builds_model = True`` and ``build_model(source, *, weight_bits, input_bits,
          timesteps, labels, **options) -> edgesnn.Model``: a source that is already an integer-ready
          spiking network (NIR); ``es.convert`` then hands it over instead of calibrating a Graph
          (with ``samples=`` when ``es.convert`` was given calibration samples).
    """


# -- running: raw input is turned into the model's input -----------------------------------------


@hookspec
def edgesnn_register_frontends(register):
    """Register frontends: turn raw input (an image, audio, an array) into the model's uint8 input.

    Called once per plugin when the registry is first used; return value ignored.

    :param register: ``register(name, factory)``. ``name`` (str) is the frontend's unique name,
        e.g. ``"image"``; a second plugin registering the same name is a ``PluginError``.
        ``factory(**config)`` builds a frontend object with

        - ``name`` (str): the same name;
        - ``config`` (dict, JSON-able): the configuration; ``factory(**config)`` rebuilds an equal
          frontend (this is how a saved Pipeline restores its frontend);
        - ``output_shape`` (tuple of int): the shape of one output, ``(H, W, C)`` or ``(T, H, W, C)``;
        - ``__call__(raw) -> numpy.ndarray`` of dtype uint8 with that shape (batch first when
          ``raw`` is a batch).
    """


# -- running: where an integer Model runs --------------------------------------------------------


@hookspec
def edgesnn_register_devices(register):
    """Register devices: places an integer Model runs (the native engine, numpy, a board ...).

    Called once per plugin when the registry is first used; return value ignored.

    :param register: ``register(name, factory)``. ``name`` (str) is the device's unique name,
        e.g. ``"remote"``; a second plugin registering the same name is a ``PluginError``.
        ``factory(**options)`` returns an ``edgesnn.Device`` (subclass it; docs/plugins.md,
        "Writing a device plugin"): ``info()``, ``check(model) -> MappingReport``,
        ``load(model) -> program``, ``run(program, x5, timesteps) -> (potentials, Statistics)``,
        ``close()``, and the optional capabilities declared on the base class.
        Building the factory must be cheap; connect to hardware or load libraries when the
        device is created or first used, not at registration.
    """
