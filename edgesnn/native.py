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

Per call (batch 1, what issue 3 measures): the input is checked once (Model.check_input on the
forward path, NativeModel.run on the binding's), the engine writes into the context's own output
and counts buffers (addresses taken once) and the run returns copies, esnn_run_batch goes without
argtypes conversion (Library.run_batch), one sample of one frame goes through buffers bound to the
context (esnn_run_bound, one argument), and Model.forward keeps the counts, building Statistics
only when model.statistics is read. `NativeModel.runner()` binds a context of its own to its own
buffers: the least per call (Runner).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np

from .devices import Device, DeviceInfo, LayerPlacement, MappingReport, with_plans
from .errors import DeviceError, FormatError, ModelError
from .statistics import COUNT_FIELDS, Statistics

LIBRARY_ENV = "EDGESNN_NATIVE_LIB"
ABI_VERSION = 1
MESSAGE_BYTES = 512
STATUS_OK = 0
STATUS_ARGUMENT = 1
STATUS_INPUT = 12
STATS_FIELDS = COUNT_FIELDS  # esnn_layer_stats, field by field


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
            if name in _LATER_FUNCTIONS and not hasattr(self.lib, name):
                continue    # an older build (benchmarks' --baseline): NativeModel.runner says it lacks them
            function = getattr(self.lib, name)
            function.restype, function.argtypes = restype, argtypes
        version = self.lib.esnn_abi_version()
        if version != ABI_VERSION:
            raise OSError(f"{self.path}: native ABI version {version}, this binding speaks {ABI_VERSION}; "
                          f"rebuild the engine")
        self.key = str(self.path)  # names this build in Model.device_cache
        # esnn_run_batch for the per-call path, without argtypes: converting ten arguments costs about
        # 0.5 us a call, so the caller passes ready ctypes values whose C types match the header exactly:
        # (c_void_p handle, pointer input, c_size_t, int batch, int input_timesteps, int timesteps,
        #  c_void_p output, c_size_t, c_void_p stats, c_size_t); the three ints are uint32_t in C and
        # go as C ints, so they must lie below 2^31 (the engine's limits are far below).
        self.run_batch = self.lib["esnn_run_batch"]
        self.run_batch.restype = ctypes.c_int
        # esnn_run_bound for Runner's calls, likewise without argtypes: its one argument is the context
        # handle, a ready c_void_p (None in a build from before it)
        self.run_bound = self.lib["esnn_run_bound"] if hasattr(self.lib, "esnn_run_bound") else None
        if self.run_bound is not None:
            self.run_bound.restype = ctypes.c_int

    def status_name(self, status: int) -> str:
        return self.lib.esnn_status_name(status).decode()

    @property
    def record_bytes(self) -> tuple[int, int]:
        """This build's {Model, Layer} record sizes (esnn_record_bytes; native/sizes.py reads a cross
        build's from its library file)."""
        values = (ctypes.c_uint32 * 2).in_dll(self.lib, "esnn_record_bytes")
        return int(values[0]), int(values[1])

    def memory_bytes_for(self, data: bytes, record_bytes: tuple[int, int]) -> int:
        """esnn_model_memory_bytes of the .esnn `data` as a build with these record sizes reports it (a
        32-bit target's): the exact model memory before flashing (esnn_model_memory_bytes_for)."""
        source = (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(bytes(data) or b"\0")
        message = ctypes.create_string_buffer(MESSAGE_BYTES)
        out = ctypes.c_uint64()
        status = self.lib.esnn_model_memory_bytes_for(source, len(data), (ctypes.c_uint32 * 2)(*record_bytes),
                                                      ctypes.byref(out), message, MESSAGE_BYTES)
        if status != STATUS_OK:
            raise FormatError(f"native loader refused the .esnn bytes ({self.status_name(status)}): {_message(message)}")
        return int(out.value)

    def __repr__(self) -> str:
        return f"<edgesnn.native.Library {str(self.path)!r}>"


# Functions added to ABI 1 after its first builds: a build without them still loads, without Runner.
_LATER_FUNCTIONS = frozenset({"esnn_context_bind", "esnn_run_bound"})


def _signatures() -> dict:
    c_size_p = ctypes.POINTER(ctypes.c_size_t)
    u8_p = ctypes.POINTER(ctypes.c_uint8)
    return {
        "esnn_abi_version": (ctypes.c_uint32, []),
        "esnn_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "esnn_model_memory_bytes": (ctypes.c_int, [u8_p, ctypes.c_size_t, c_size_p, ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_load": (ctypes.c_int, [u8_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                           ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_memory_bytes_for": (ctypes.c_int, [u8_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32 * 2),
                                                       ctypes.POINTER(ctypes.c_uint64), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_load_plan": (ctypes.c_int, [u8_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_model_arena_bytes": (ctypes.c_size_t, [ctypes.c_void_p]),
        "esnn_model_plan_arena_bytes": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int]),
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
        "esnn_context_bind": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32,
                                             ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t,
                                             ctypes.c_void_p, ctypes.c_size_t]),
        "esnn_run_bound": (ctypes.c_int, [ctypes.c_void_p]),
        "esnn_run_batch_trace": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32,
                                                ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int32, ctypes.c_void_p,
                                                ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                                ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]),
        # streaming (native/src/stream.zig)
        "esnn_stream_bytes": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, c_size_p, ctypes.c_char_p,
                                             ctypes.c_size_t]),
        "esnn_stream_init": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "esnn_stream_push": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                            ctypes.c_size_t, ctypes.c_void_p]),
        "esnn_stream_reset": (ctypes.c_int, [ctypes.c_void_p]),
        "esnn_stream_message": (ctypes.c_char_p, [ctypes.c_void_p]),
    }


LIBRARY = Library(library_path())  # the default build; ImportError / OSError here mean "no cpu device"


def _message(buffer) -> str:
    return buffer.value.decode("utf-8", "replace")


# The arena plans (native/src/planner.zig; edgesnn.h ESNN_PLAN_FAST / ESNN_PLAN_LEAN)
PLANS = {"fast": 0, "lean": 1}


class NativeModel:
    """A model loaded by the native loader: immutable, shared by threads; runs through a context pool.

    `plan`: the arena plan its contexts use, "fast" (the default) or "lean" (the least memory, for
    MCU targets; bit-exact with fast). `arena_bytes` is this plan's, `plan_arena_bytes` both plans'.
    """

    def __init__(self, data: bytes, library: Library | None = None, plan: str = "fast"):
        if plan not in PLANS:
            raise ValueError(f"plan {plan!r}, expected one of {', '.join(map(repr, PLANS))}")
        self.plan = plan
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
        status = _lib.esnn_model_load_plan(source, len(data), self._memory, self.memory_bytes, PLANS[plan],
                                           ctypes.byref(handle), message, MESSAGE_BYTES)
        self._raise_load_error(status, message)
        self._handle = handle
        self.arena_bytes = int(_lib.esnn_model_arena_bytes(handle))
        self.plan_arena_bytes = {name: int(_lib.esnn_model_plan_arena_bytes(handle, code)) for name, code in PLANS.items()}
        self.layer_count = int(_lib.esnn_model_layer_count(handle))
        shape_in, shape_out = (ctypes.c_uint32 * 4)(), (ctypes.c_uint32 * 3)()
        _lib.esnn_model_input_shape(handle, ctypes.byref(shape_in))
        _lib.esnn_model_output_shape(handle, ctypes.byref(shape_out))
        self.input_shape = tuple(int(v) for v in shape_in[:3])
        self.input_bits = int(shape_in[3])
        self.output_shape = tuple(int(v) for v in shape_out)
        # idle contexts; list.pop and list.append are atomic, so threads share the list without a lock
        self._contexts: list[_Context] = []

    def _raise_load_error(self, status: int, message) -> None:
        if status != STATUS_OK:
            raise FormatError(f"native loader refused the .esnn bytes ({self.library.status_name(status)}): "
                              f"{_message(message)}")

    def run(self, x5: np.ndarray, timesteps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run uint8 `x5` (N, T, H, W, C) in one native call; return (int32 (N, OH, OW, OC), uint64 stats (layers, 5)).

        With `timesteps` > T = 1 the single input frame is presented at every timestep. Values above
        2^input_bits - 1 get a ValueError from the engine naming sample, timestep, pixel and channel.
        """
        x5 = self._check_input(x5)
        input_timesteps = x5.shape[1]
        timesteps = input_timesteps if timesteps is None else int(timesteps)
        if input_timesteps != 1 and input_timesteps != timesteps:
            raise ValueError(f"timesteps={timesteps} needs an input with T = 1 or T = {timesteps}, got T = {input_timesteps}")
        return self.run_checked(x5, timesteps)

    def run_checked(self, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """`run` of an input already checked: uint8, C-contiguous (N, T, H, W, C) of this model's input
        shape with N >= 1 and T = 1 or `timesteps` (Model.check_input's output is). The engine checks the
        sizes and value range again, so a wrong input gets an exception, never a bad memory access."""
        contexts = self._contexts
        try:
            context = contexts.pop()
        except IndexError:
            context = _Context(self)
        try:
            return context.run(x5, timesteps)
        finally:
            contexts.append(context)

    def run_over_time(self, x5: np.ndarray, timesteps: int, early_exit: int | None = None):
        """`run_checked`, keeping the output after every timestep (esnn_run_batch_trace): (int32 outputs
        (N, timesteps, OH, OW, OC), uint32 timesteps used (N,), uint64 counts (layers, 5)); `early_exit`:
        the margin of docs/semantics.md ("Over time and early exit"), None for none."""
        context = self._acquire()
        try:
            return context.run_over_time(x5, timesteps, 0 if early_exit is None else int(early_exit))
        finally:
            self._release(context)

    def runner(self, batch: int = 1, timesteps: int = 1, input_timesteps: int = 1) -> "Runner":
        """A Runner: a context of its own with its input, output and counts buffers bound once
        (esnn_context_bind), for repeated runs of one batch shape at the least cost per call."""
        return Runner(self, batch, timesteps, input_timesteps)

    def _check_input(self, x5) -> np.ndarray:
        if type(x5) is not np.ndarray or x5.dtype is not _UINT8:
            if not isinstance(x5, np.ndarray) or x5.dtype != np.uint8:
                raise TypeError(f"native input must be a numpy array {self._expected_input()}, got "
                                f"{type(x5).__name__} {getattr(x5, 'dtype', '')}")
        if x5.ndim != 5 or x5.shape[2:] != self.input_shape or x5.shape[0] < 1 or x5.shape[1] < 1:
            raise ValueError(f"native input must be {self._expected_input()} with N, T >= 1, got shape {x5.shape}")
        return x5 if x5.flags.c_contiguous else np.ascontiguousarray(x5)

    def _expected_input(self) -> str:
        return f"uint8 (N, T, {', '.join(map(str, self.input_shape))})"

    def _acquire(self) -> "_Context":
        try:
            return self._contexts.pop()
        except IndexError:
            return _Context(self)

    def _release(self, context: "_Context") -> None:
        self._contexts.append(context)


_UINT8 = np.dtype(np.uint8)
_OUTPUT_KEPT_BYTES = 1 << 20  # a context keeps its output buffer between runs up to this size


class _Context:
    """One inference context: its arena (exactly esnn_model_arena_bytes), handle and output buffers;
    one thread at a time.

    A run writes into buffers the context owns and returns copies: copying a small array costs less
    than taking a new array's address (numpy's .ctypes.data takes about 1 us), and the addresses of
    the context's own buffers are taken once.
    """

    def __init__(self, model: NativeModel):
        # the context keeps the model's memory alive, not the NativeModel: the model's pool holds its
        # contexts, so a reference back would make a cycle that only the cyclic GC frees
        self._model_memory = model._memory
        self._library = model.library
        self._input_bits = model.input_bits
        self._output_shape = model.output_shape
        self.arena = ctypes.create_string_buffer(model.arena_bytes)
        handle = ctypes.c_void_p()
        message = ctypes.create_string_buffer(MESSAGE_BYTES)
        status = model.library.lib.esnn_context_init(model._handle, self.arena, model.arena_bytes, ctypes.byref(handle),
                                                     message, MESSAGE_BYTES)
        if status != STATUS_OK:
            raise DeviceError(f"native context init failed ({model.library.status_name(status)}): {_message(message)}")
        self.handle = handle
        self._run_batch = model.library.run_batch
        self._counts = np.zeros((model.layer_count, len(STATS_FIELDS)), np.uint64)  # esnn_layer_stats[layers]
        self._counts_arguments = (_address(self._counts), ctypes.c_size_t(model.layer_count))
        self._output: np.ndarray | None = None   # int32 (batch, OH, OW, OC) of the last batch size
        self._output_arguments: tuple = ()       # its address and size, as esnn_run_batch takes them
        # one sample of one frame (Model.forward's batch 1) through buffers bound to this context once
        # per timestep count (esnn_context_bind): esnn_run_bound's one argument instead of ten
        self._run_bound = model.library.run_bound
        self._single_input = np.zeros((1, 1, *model.input_shape), np.uint8)
        self._single_output = np.zeros((1, *model.output_shape), np.int32)
        self._single_timesteps: int | None = None  # the timesteps bound, None: not bound

    def run(self, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """Potentials int32 (N, OH, OW, OC) and counts uint64 (layers, 5) of a checked input (see run_checked)."""
        batch, input_timesteps = x5.shape[:2]
        if batch == 1 and input_timesteps == 1 and self._run_bound is not None:
            return self._run_single(x5, timesteps)
        output = self._output
        if output is None or output.shape[0] != batch:
            output = self._output_buffer(batch)
        # the argument kinds Library.run_batch documents: batch and timesteps < 2^31 go as C ints
        status = self._run_batch(self.handle, _input_pointer(x5), ctypes.c_size_t(x5.size), batch, input_timesteps,
                                 timesteps, *self._output_arguments, *self._counts_arguments)
        if status != STATUS_OK:
            self._raise_run_error(status)
        potentials = output.copy() if output is self._output else output
        return potentials, self._counts.copy()

    def _run_single(self, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """run of one sample of one frame (x5 checked: (1, 1, H, W, C) uint8) through the bound buffers."""
        if timesteps != self._single_timesteps:
            self._single_timesteps = None
            status = self._library.lib.esnn_context_bind(
                self.handle, _address(self._single_input), self._single_input.size, 1, 1, timesteps,
                _address(self._single_output), self._single_output.size, *self._counts_arguments)
            if status != STATUS_OK:
                self._raise_run_error(status)
            self._single_timesteps = timesteps
        np.copyto(self._single_input, x5)
        status = self._run_bound(self.handle)
        if status != STATUS_OK:
            self._raise_run_error(status)
        return self._single_output.copy(), self._counts.copy()

    def run_over_time(self, x5: np.ndarray, timesteps: int, margin: int):
        batch, input_timesteps = x5.shape[:2]
        output = np.empty((batch, *self._output_shape), np.int32)
        outputs = np.empty((batch, timesteps, *self._output_shape), np.int32)
        used = np.empty(batch, np.uint32)
        status = self._library.lib.esnn_run_batch_trace(
            self.handle, _input_pointer(x5), ctypes.c_size_t(x5.size), batch, input_timesteps, timesteps, margin,
            _address(output), output.size, _address(outputs), outputs.size, _address(used), used.size,
            *self._counts_arguments)
        if status != STATUS_OK:
            self._raise_run_error(status)
        return outputs, used, self._counts.copy()

    def _raise_run_error(self, status: int) -> None:
        text = self._library.lib.esnn_context_message(self.handle).decode("utf-8", "replace")
        if status == STATUS_INPUT:  # a value above 2^input_bits - 1, located by the engine
            raise ValueError(f"input values must lie in [0, {(1 << self._input_bits) - 1}] "
                             f"(input_bits={self._input_bits}): {text}")
        raise DeviceError(f"native run failed ({self._library.status_name(status)}): {text}")

    def _output_buffer(self, batch: int) -> np.ndarray:
        """An output array for `batch` samples with its run arguments; kept for the next run when small."""
        output = np.empty((batch, *self._output_shape), np.int32)
        arguments = (_address(output), ctypes.c_size_t(output.size))
        if output.nbytes <= _OUTPUT_KEPT_BYTES:
            self._output, self._output_arguments = output, arguments
        else:  # a large batch: returned as it is, not copied and not kept
            self._output, self._output_arguments = None, arguments
        return output


class Runner:
    """Runs of one batch shape through buffers bound once (esnn_context_bind / esnn_run_bound): what
    an interpreter's set_tensor / invoke / get_tensor are to TFLite. One thread at a time.

        runner = native_model(model).runner()    # batch 1, one timestep
        potentials = runner(x5)                  # uint8 (1, 1, H, W, C) -> int32 (1, OH, OW, OC), a copy
        runner.input[...] = x5; runner.invoke()  # or fill .input yourself; .output, .counts hold the results

    `__call__` checks `x5` (a numpy uint8 array of exactly `input.shape`: no casting, no broadcasting),
    copies it into `input`, runs, and returns a copy of `output`; the engine checks the value range
    (ValueError naming sample, timestep and position). `counts` (uint64 (layers, 5), esnn_layer_stats)
    are the last run's.
    """

    def __init__(self, model: NativeModel, batch: int = 1, timesteps: int = 1, input_timesteps: int = 1):
        batch, timesteps, input_timesteps = int(batch), int(timesteps), int(input_timesteps)
        if not 1 <= batch < 2**31 or not 1 <= timesteps < 2**31 or input_timesteps not in (1, timesteps):
            raise ValueError(f"a runner needs batch >= 1, timesteps >= 1 and input_timesteps 1 or timesteps, got "
                             f"batch={batch}, timesteps={timesteps}, input_timesteps={input_timesteps}")
        if model.library.run_bound is None:
            raise DeviceError(f"{model.library.path} has no esnn_run_bound (a build from before it): rebuild it")
        self._context = _Context(model)    # its own: no other run rebinds it
        self._library = model.library
        self.input = np.zeros((batch, input_timesteps, *model.input_shape), np.uint8)
        self.output = np.zeros((batch, *model.output_shape), np.int32)
        self.counts = self._context._counts
        self._shape = self.input.shape
        lib = model.library.lib
        status = lib.esnn_context_bind(self._context.handle, _address(self.input), self.input.size, batch,
                                       input_timesteps, timesteps, _address(self.output), self.output.size,
                                       _address(self.counts), model.layer_count)
        if status == STATUS_ARGUMENT:   # the engine's limits (batch, timesteps) refused
            raise ValueError(f"native runner: {lib.esnn_context_message(self._context.handle).decode()}")
        if status != STATUS_OK:
            self._context._raise_run_error(status)
        self._run_bound = model.library.run_bound
        self._handle = self._context.handle

    def __call__(self, x5: np.ndarray) -> np.ndarray:
        if type(x5) is not np.ndarray or x5.dtype is not _UINT8 or x5.shape != self._shape:
            self._refuse(x5)
        np.copyto(self.input, x5)
        self.invoke()
        return self.output.copy()

    def invoke(self) -> None:
        """Run the bound batch on what `input` holds now, into `output` and `counts`."""
        status = self._run_bound(self._handle)
        if status != STATUS_OK:
            self._context._raise_run_error(status)

    def _refuse(self, x5) -> None:
        expected = f"a numpy uint8 array of shape {self._shape}"
        if not isinstance(x5, np.ndarray) or x5.dtype != np.uint8:
            raise TypeError(f"runner input must be {expected}, got {type(x5).__name__} {getattr(x5, 'dtype', '')}")
        if x5.shape != self._shape:
            raise ValueError(f"runner input must be {expected}, got shape {x5.shape}")


def _address(array: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(array.__array_interface__["data"][0])


def _input_pointer(x5: np.ndarray):
    """The address of a C-contiguous array's data, as Library.run_batch takes it."""
    if x5.flags.writeable:
        return ctypes.byref(ctypes.c_char.from_buffer(x5))  # about 0.3 us; numpy's .ctypes.data about 1.3 us
    return _address(x5)


class NativeStream:
    """A sliding window over a stream of input rows (frames), run by native/src/stream.zig: a window
    every ``hop_frames`` frames, each bit-exact with running the model on that window, at the cost of
    the rows the new frames complete rather than the whole window (docs/c-api.md, "Streaming").

        stream = NativeStream(native_model(model), hop_frames=1)
        outputs = stream.push(frames)    # uint8 (k, W, C) -> int32 (windows completed, OH, OW, OC)

    A model that pads along time (rows), pools inside the window, or has spiking neurons or
    branches cannot stream: ModelError with the engine's reason (run whole windows instead).
    """

    def __init__(self, model: NativeModel, hop_frames: int):
        hop_frames = int(hop_frames)
        if not 1 <= hop_frames < 2**32:     # the engine has the upper limit (native/src/stream.zig)
            raise ValueError(f"hop_frames must be a positive number of frames, got {hop_frames}")
        self.hop_frames = hop_frames
        self.window_frames = model.input_shape[0]
        self.frame_shape = model.input_shape[1:]                 # (W, C) of one frame
        self.output_shape = model.output_shape
        self._model_memory = model._memory                       # the stream points into the model
        self._library = model.library
        lib = model.library.lib
        message = ctypes.create_string_buffer(MESSAGE_BYTES)
        size = ctypes.c_size_t()
        status = lib.esnn_stream_bytes(model._handle, hop_frames, ctypes.byref(size), message, MESSAGE_BYTES)
        if status == STATUS_ARGUMENT:
            raise ValueError(f"native stream: {_message(message)}")
        if status != STATUS_OK:
            raise ModelError(f"the model cannot stream ({self._library.status_name(status)}): {_message(message)}")
        self.memory_bytes = size.value
        self._memory = ctypes.create_string_buffer(self.memory_bytes)
        handle = ctypes.c_void_p()
        status = lib.esnn_stream_init(model._handle, hop_frames, self._memory, self.memory_bytes,
                                      ctypes.byref(handle), message, MESSAGE_BYTES)
        if status != STATUS_OK:
            raise DeviceError(f"native stream init failed ({self._library.status_name(status)}): {_message(message)}")
        self._handle = handle
        self._push = lib["esnn_stream_push"]          # without argtypes: the arguments go as ready ctypes values
        self._push.restype = ctypes.c_int
        self._windows = ctypes.c_uint32()
        self._windows_pointer = ctypes.byref(self._windows)
        self._frame_values = int(np.prod(self.frame_shape))
        self._output_values = int(np.prod(self.output_shape))
        self.frames_pushed = 0
        self._outputs = self._output_buffer(2)

    def _output_buffer(self, windows: int) -> tuple:
        outputs = np.empty((windows, *self.output_shape), np.int32)
        return outputs, _address(outputs), ctypes.c_size_t(outputs.size)

    def windows_for(self, frame_count: int) -> int:
        """The windows that `frame_count` more frames complete."""
        return self._windows_by(self.frames_pushed + frame_count) - self._windows_by(self.frames_pushed)

    def _windows_by(self, frames: int) -> int:
        return 0 if frames < self.window_frames else (frames - self.window_frames) // self.hop_frames + 1

    def push(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (k, W, C) (or (k, W * C)) -> int32 outputs (windows, OH, OW, OC) of the windows they
        complete, in order (a view of the stream's buffer: copy it to keep it past the next push)."""
        if type(frames) is not np.ndarray or frames.dtype is not _UINT8 or not frames.flags.c_contiguous:
            if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
                raise TypeError(f"stream frames must be a uint8 array (k, {', '.join(map(str, self.frame_shape))}), "
                                f"got {type(frames).__name__} {getattr(frames, 'dtype', '')}")
            frames = np.ascontiguousarray(frames)
        size = frames.size
        count = size // self._frame_values
        if count * self._frame_values != size or (frames.ndim > 1 and frames.shape[0] != count):
            raise ValueError(f"stream frames must be (k, {', '.join(map(str, self.frame_shape))}) uint8, got shape "
                             f"{frames.shape}")
        window, hop, before = self.window_frames, self.hop_frames, self.frames_pushed
        after = before + count
        windows = (0 if after < window else (after - window) // hop + 1) - \
            (0 if before < window else (before - window) // hop + 1)
        outputs, address, capacity = self._outputs
        if outputs.shape[0] < windows:
            self._outputs = outputs, address, capacity = self._output_buffer(windows)
        status = self._push(self._handle, _input_pointer(frames) if size else None, ctypes.c_size_t(size),
                            address, capacity, self._windows_pointer)
        if status != STATUS_OK:
            text = self._library.lib.esnn_stream_message(self._handle).decode("utf-8", "replace")
            if status == STATUS_INPUT:
                raise ValueError(f"stream frame values out of range: {text}")
            raise DeviceError(f"native stream push failed ({self._library.status_name(status)}): {text}")
        if self._windows.value != windows:
            raise DeviceError(f"native stream completed {self._windows.value} windows, {windows} expected")
        self.frames_pushed = after
        return outputs[:windows]

    def reset(self) -> None:
        """Forget the frames pushed: the next push starts a new stream."""
        self._library.lib.esnn_stream_reset(self._handle)
        self.frames_pushed = 0


def native_model(model, library: Library | None = None, plan: str = "fast") -> NativeModel:
    """The NativeModel of an edgesnn Model, loaded once per Model object, library build and arena plan.

    A Model is treated as unchanged after it was read or first ran; build a new Model to change
    parameters. A model read from bytes (Model.from_bytes) is loaded from those bytes, not re-written.
    The Model keeps it (Model.device_cache, keyed by the library's path), so it lives as long as the Model.
    """
    library = library or LIBRARY
    key = library.key if plan == "fast" else f"{library.key} plan={plan}"   # CpuDevice._cache_key
    loaded = model.device_cache.get(key)
    if loaded is None:
        data = model.source_bytes if model.source_bytes is not None else model.to_bytes()
        # two threads may both load it; dict.setdefault keeps the first one stored
        loaded = model.device_cache.setdefault(key, NativeModel(data, library, plan))
    return loaded


class CpuDevice(Device):
    """The native engine in this process: event-driven, integer-only, bit-exact with `reference`."""

    name = "cpu"
    # The engine refuses input values above 2^input_bits - 1 itself (a ValueError naming sample,
    # timestep, pixel and channel), so Model.check_input need not scan uint8 input for them.
    checks_input_range = True
    returns_counts = True        # run_counts: the engine's counts; Statistics built on demand
    repeats_dense_input = True   # x5 with T = 1 runs `timesteps` timesteps (esnn_run_batch input_timesteps 1)
    runs_over_time = True        # run_over_time: esnn_run_batch_trace

    def __init__(self, library: str | os.PathLike | Library | None = None, plan: str = "fast"):
        """`library`: another build of the engine (a path or Library); default: the installed one.
        `plan`: the arena plan, "fast" or "lean" (the least memory; bit-exact; NativeModel)."""
        if library is None or isinstance(library, Library):
            self.library = library or LIBRARY
        else:
            self.library = Library(library)
        if plan not in PLANS:
            raise ValueError(f"plan {plan!r}, expected one of {', '.join(map(repr, PLANS))}")
        self.plan = plan
        self._cache_key = self.library.key if plan == "fast" else f"{self.library.key} plan={plan}"

    def info(self) -> DeviceInfo:
        import platform

        from . import __version__

        return DeviceInfo(name=self.name, architecture=f"{platform.machine()}-{sys.platform}",
                          engine_version=f"edgesnn {__version__} native (ABI {ABI_VERSION})",
                          layers_max=256, channels_max=8192,   # native/src/limits.zig
                          extra={"library": str(self.library.path)})

    def memory_figures(self, model) -> tuple[int, int]:
        loaded = native_model(model, self.library, self.plan)
        return loaded.memory_bytes, loaded.arena_bytes

    def check(self, model) -> MappingReport:
        try:
            native_model(model, self.library, self.plan)
        except FormatError as exc:
            return MappingReport(device=self.name, fits=False, unsupported=[str(exc)],
                                 layers=[LayerPlacement(l.name, l.kind, False, reason=str(exc)) for l in model.layers])
        return with_plans(super().check(model), model, self.plan)

    def load(self, model) -> NativeModel:
        return native_model(model, self.library, self.plan)

    def program_of(self, model) -> NativeModel:
        return model.device_cache.get(self._cache_key) or native_model(model, self.library, self.plan)

    def run(self, program, x5: np.ndarray, timesteps: int | None = None) -> tuple[np.ndarray, Statistics]:
        """`program`: the Model (its Statistics need the layers); its NativeModel is loaded once and kept."""
        if isinstance(program, NativeModel):
            raise TypeError("CpuDevice.run takes the Model (its Statistics name the layers); "
                            "run_counts takes a NativeModel")
        loaded = self.program_of(program)
        frames, timesteps = _frames_and_timesteps(x5, x5.shape[1] if timesteps is None else int(timesteps))
        potentials, counts = loaded.run_checked(loaded._check_input(frames), timesteps)
        return potentials, Statistics.from_counts(program.layers, counts, x5.shape[0], timesteps, self.name)

    def run_counts(self, program, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """`run` for Model.forward, which checked `x5` (Model.check_input): not checked again here, and
        the statistics as the engine's counts, uint64 (layers, 5) in COUNT_FIELDS order."""
        loaded = program if type(program) is NativeModel else self.program_of(program)
        return loaded.run_checked(*_frames_and_timesteps(x5, timesteps))


    def run_over_time(self, model, x5, timesteps, early_exit=None):
        loaded = self.program_of(model)
        frames, timesteps = _frames_and_timesteps(x5, int(timesteps))
        outputs, used, counts = loaded.run_over_time(loaded._check_input(frames), timesteps, early_exit)
        return outputs, used.astype(np.int64), Statistics.from_counts(model.layers, counts, x5.shape[0], timesteps,
                                                                      self.name)


def _frames_and_timesteps(x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, int]:
    """What the engine takes for `x5` (N, T, H, W, C) run for `timesteps`: one frame per sample and the
    count when the input repeats (T = 1, or a dense input that Model.check_input passes as a view with
    stride 0 on T: nothing is copied or compared), else `x5` itself. With one frame the engine computes
    the layers that read only the model input once per sample."""
    if x5.shape[1] == 1:
        return x5, int(timesteps)
    if x5.strides[1] == 0:
        return np.ascontiguousarray(x5[:, :1]), x5.shape[1]
    return x5, x5.shape[1]
