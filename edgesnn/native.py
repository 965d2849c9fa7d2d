"""The native Zig engine through its C ABI (native/include/edgesnn.h), and the `cpu` device.

    from edgesnn.native import NativeModel
    engine = NativeModel(model.to_bytes())        # validated by the native loader
    potentials, layer_stats = engine.run(x5)      # uint8 (N, T, H, W, C) -> int32, uint64 (layers, 5)

The shared library is built by the install (`pip install .`, see _build_backend/) into
edgesnn/_lib/; the environment variable EDGESNN_NATIVE_LIB points the default at another build,
and `Library(path)` / `CpuDevice(library=path)` load one beside it (the tests run ReleaseSafe
builds that way). Importing this module raises ImportError when no library is found and OSError
when it does not load (edgesnn/default_plugin.py then leaves the `cpu` device out).

Memory: the loaded model lives in one buffer allocated here once; each context owns one arena of
exactly `esnn_model_arena_bytes`. A run allocates nothing in native code. ctypes releases the GIL
during native calls, so threads run their own contexts in parallel (a pool hands them out).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import weakref
from pathlib import Path

import numpy as np

from .devices import Device, LayerPlacement, MappingReport
from .errors import DeviceError, FormatError
from .statistics import LayerStatistics, Statistics

LIBRARY_ENV = "EDGESNN_NATIVE_LIB"
ABI_VERSION = 1
MESSAGE_BYTES = 512
STATUS_OK = 0
STATUS_INPUT = 12
STATS_FIELDS = ("input_events", "input_size", "output_events", "output_size", "synaptic_ops")


class _LayerStats(ctypes.Structure):
    """esnn_layer_stats."""

    _fields_ = [(name, ctypes.c_uint64) for name in STATS_FIELDS]


def library_path() -> Path:
    """The shared library this module loads: $EDGESNN_NATIVE_LIB, else the one the install built."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise ImportError(f"{LIBRARY_ENV}={override!r} does not name a file")
        return path
    names = {"darwin": "libedgesnn.dylib", "win32": "edgesnn.dll"}
    path = Path(__file__).resolve().parent / "_lib" / names.get(sys.platform, "libedgesnn.so")
    if not path.is_file():
        raise ImportError(f"the native engine is not built: {path} is missing (reinstall with `pip install .` "
                          f"or `pip install -e . --no-build-isolation`, which runs `python -m ziglang build`)")
    return path


class Library:
    """One loaded build of the engine with its C signatures declared (several builds may coexist)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))
        for name, (restype, argtypes) in _signatures().items():
            function = getattr(self.lib, name)
            function.restype, function.argtypes = restype, argtypes
        version = self.lib.esnn_abi_version()
        if version != ABI_VERSION:
            raise OSError(f"{self.path}: native ABI version {version}, this binding speaks {ABI_VERSION}; "
                          f"rebuild the engine")

    def status_name(self, status: int) -> str:
        return self.lib.esnn_status_name(status).decode()

    def __repr__(self) -> str:
        return f"<edgesnn.native.Library {str(self.path)!r}>"


def _signatures() -> dict:
    c_size_p = ctypes.POINTER(ctypes.c_size_t)
    u8_p = ctypes.POINTER(ctypes.c_uint8)
    return {
        "esnn_abi_version": (ctypes.c_uint32, []),
        "esnn_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "esnn_model_memory_bytes": (ctypes.c_int, [u8_p, ctypes.c_size_t, c_size_p, ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_load": (ctypes.c_int, [u8_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_arena_bytes": (ctypes.c_size_t, [ctypes.c_void_p]),
        "esnn_model_layer_count": (ctypes.c_uint32, [ctypes.c_void_p]),
        "esnn_model_input_shape": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32 * 4)]),
        "esnn_model_output_shape": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32 * 3)]),
        "esnn_context_init": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_context_message": (ctypes.c_char_p, [ctypes.c_void_p]),
        # input, output and stats go as addresses (numpy's .ctypes.data): cheaper per call than pointers
        "esnn_run_batch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32,
                                          ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.c_void_p, ctypes.c_size_t]),
    }


LIBRARY = Library(library_path())  # the default build; ImportError / OSError here mean "no cpu device"


def _message(buffer) -> str:
    return buffer.value.decode("utf-8", "replace")


class NativeModel:
    """A model loaded by the native loader: immutable, shared by threads; runs through a context pool."""

    def __init__(self, data: bytes, library: Library | None = None):
        self.library = library or LIBRARY
        _lib = self.library.lib
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"NativeModel takes the .esnn bytes, got {type(data).__name__}")
        data = bytes(data)
        source = (ctypes.c_uint8 * len(data)).from_buffer_copy(data) if data else (ctypes.c_uint8 * 1)()
        message = ctypes.create_string_buffer(MESSAGE_BYTES)
        memory_bytes = ctypes.c_size_t()
        status = _lib.esnn_model_memory_bytes(source, len(data), ctypes.byref(memory_bytes), message, MESSAGE_BYTES)
        self._raise_load_error(status, message)
        self.memory_bytes = memory_bytes.value
        self._memory = ctypes.create_string_buffer(self.memory_bytes)  # holds the model; lives as long as self
        handle = ctypes.c_void_p()
        status = _lib.esnn_model_load(source, len(data), self._memory, self.memory_bytes, ctypes.byref(handle),
                                      message, MESSAGE_BYTES)
        self._raise_load_error(status, message)
        self._handle = handle
        self.arena_bytes = int(_lib.esnn_model_arena_bytes(handle))
        self.layer_count = int(_lib.esnn_model_layer_count(handle))
        shape_in, shape_out = (ctypes.c_uint32 * 4)(), (ctypes.c_uint32 * 3)()
        _lib.esnn_model_input_shape(handle, ctypes.byref(shape_in))
        _lib.esnn_model_output_shape(handle, ctypes.byref(shape_out))
        self.input_shape = tuple(int(v) for v in shape_in[:3])
        self.input_bits = int(shape_in[3])
        self.output_shape = tuple(int(v) for v in shape_out)
        self._contexts: list[_Context] = []
        self._contexts_lock = threading.Lock()

    def _raise_load_error(self, status: int, message) -> None:
        if status != STATUS_OK:
            raise FormatError(f"native loader refused the .esnn bytes ({self.library.status_name(status)}): "
                              f"{_message(message)}")

    def run(self, x5: np.ndarray, timesteps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run uint8 `x5` (N, T, H, W, C) in one native call; return (int32 (N, OH, OW, OC), uint64 stats (layers, 5)).

        With `timesteps` > T = 1 the single input frame is presented at every timestep.
        """
        x5 = self._check_input(x5)
        batch, input_timesteps = x5.shape[:2]
        timesteps = input_timesteps if timesteps is None else int(timesteps)
        if input_timesteps not in (1, timesteps):
            raise ValueError(f"timesteps={timesteps} needs an input with T = 1 or T = {timesteps}, got T = {input_timesteps}")
        output = np.empty((batch, *self.output_shape), dtype=np.int32)
        counts = np.empty((self.layer_count, len(STATS_FIELDS)), dtype=np.uint64)  # esnn_layer_stats[layers]
        _lib = self.library.lib
        context = self._acquire()
        try:
            status = _lib.esnn_run_batch(context.handle, x5.ctypes.data, x5.size, batch, input_timesteps, timesteps,
                                         output.ctypes.data, output.size, counts.ctypes.data, self.layer_count)
            if status != STATUS_OK:
                text = _lib.esnn_context_message(context.handle).decode("utf-8", "replace")
                error = ValueError if status == STATUS_INPUT else DeviceError
                raise error(f"native run failed ({self.library.status_name(status)}): {text}")
        finally:
            self._release(context)
        return output, counts

    def _check_input(self, x5) -> np.ndarray:
        expected = f"uint8 (N, T, {', '.join(map(str, self.input_shape))})"
        if not isinstance(x5, np.ndarray) or x5.dtype != np.uint8:
            raise TypeError(f"native input must be a numpy array {expected}, got "
                            f"{type(x5).__name__} {getattr(x5, 'dtype', '')}")
        if x5.ndim != 5 or x5.shape[2:] != self.input_shape or x5.shape[0] < 1 or x5.shape[1] < 1:
            raise ValueError(f"native input must be {expected} with N, T >= 1, got shape {x5.shape}")
        input_max = (1 << self.input_bits) - 1
        if input_max < 255 and x5.max() > input_max:
            raise ValueError(f"native input values must lie in [0, {input_max}] (input_bits={self.input_bits}); "
                             f"got max {x5.max()}")
        return np.ascontiguousarray(x5)

    def _acquire(self) -> "_Context":
        with self._contexts_lock:
            if self._contexts:
                return self._contexts.pop()
        return _Context(self)

    def _release(self, context: "_Context") -> None:
        with self._contexts_lock:
            self._contexts.append(context)


class _Context:
    """One inference context: its arena (exactly esnn_model_arena_bytes) and handle; one thread at a time."""

    def __init__(self, model: NativeModel):
        self.model = model  # keeps the model memory alive while the context exists
        self.arena = ctypes.create_string_buffer(model.arena_bytes)
        handle = ctypes.c_void_p()
        message = ctypes.create_string_buffer(MESSAGE_BYTES)
        status = model.library.lib.esnn_context_init(model._handle, self.arena, model.arena_bytes, ctypes.byref(handle),
                                        message, MESSAGE_BYTES)
        if status != STATUS_OK:
            raise DeviceError(f"native context init failed ({model.library.status_name(status)}): {_message(message)}")
        self.handle = handle


_loaded: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
_loaded_lock = threading.Lock()


def native_model(model, library: Library | None = None) -> NativeModel:
    """The NativeModel of an edgesnn Model, loaded once per Model object and library build.

    A Model is treated as unchanged after it first ran; build a new Model to change parameters.
    """
    library = library or LIBRARY
    with _loaded_lock:
        loaded = _loaded.get(model, {}).get(library.path)
    if loaded is None:
        loaded = NativeModel(model.to_bytes(), library)
        with _loaded_lock:
            loaded = _loaded.setdefault(model, {}).setdefault(library.path, loaded)
    return loaded


class CpuDevice(Device):
    """The native engine in this process: event-driven, integer-only, bit-exact with `reference`."""

    name = "cpu"

    def __init__(self, library: str | os.PathLike | Library | None = None):
        """`library`: another build of the engine (a path or Library); default: the installed one."""
        if library is None or isinstance(library, Library):
            self.library = library or LIBRARY
        else:
            self.library = Library(library)

    def check(self, model) -> MappingReport:
        try:
            loaded = native_model(model, self.library)
        except FormatError as exc:
            return MappingReport(device=self.name, fits=False, unsupported=[str(exc)],
                                 layers=[LayerPlacement(l.name, l.kind, False, reason=str(exc)) for l in model.layers])
        return MappingReport(device=self.name, fits=True, arena_bytes=loaded.arena_bytes,
                             program_bytes=loaded.memory_bytes,
                             layers=[LayerPlacement(l.name, l.kind, True, self.name) for l in model.layers])

    def run(self, model, x5: np.ndarray) -> tuple[np.ndarray, Statistics]:
        loaded = native_model(model, self.library)
        timesteps = x5.shape[1]
        if timesteps > 1 and (x5[:, 1:] == x5[:, :1]).all():
            # the same frame at every timestep (a dense input): the engine then computes the layers
            # that read only the model input once per sample
            potentials, counts = loaded.run(x5[:, :1], timesteps=timesteps)
        else:
            potentials, counts = loaded.run(x5)
        layers = [LayerStatistics(layer.name, layer.kind, **dict(zip(STATS_FIELDS, row)))
                  for layer, row in zip(model.layers, counts.tolist())]
        return potentials, Statistics(samples=x5.shape[0], timesteps=x5.shape[1], device=self.name, layers=layers)
