"""The `remote` device: a Model run by a device runner over a framed link (docs/protocol.md).

    board = es.device("remote", command=["qemu-aarch64", "edgesnn-runner"])    # stdio
    board = es.device("remote", command=[runner], listen=True)                  # spawn, then TCP
    board = es.device("remote", address="192.168.1.7:5000")                     # a runner listening
    board = es.device("remote", serial="/dev/ttyUSB0")                          # a serial line
    model.forward(x, device=board)

Every request has a timeout; a link that fails (timeout, closed, corrupted or out-of-sequence
reply, wrong version) raises DeviceError and is closed; with reconnect=True the next request (and
this one, once) reconnects first: a spawned runner is started again, the model loaded again.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgesnn
from edgesnn import Device, DeviceError, DeviceInfo, MappingReport
from edgesnn.devices import check_against, native_memory_figures
from edgesnn.statistics import COUNT_FIELDS, Statistics

from . import protocol as P
from .transport import FdLink, LinkError, ProcessLink, SerialLink, TcpLink, parse_address

RUNNER_ENV = "EDGESNN_RUNNER"
SPIN_US_DEFAULT = 500.0   # a wait for a reply spins this long before it sleeps (transport.py)
_monotonic, _crc32 = time.monotonic, zlib.crc32
STATS_VALUES = len(COUNT_FIELDS)
_RUN_REQUEST, _PAIR, _U32 = P.RUN_REQUEST, struct.Struct("<II"), struct.Struct("<I")
_HEADER, _HEAD20 = P.HEADER, struct.Struct("<IHHIII")   # the header; its first 20 bytes (what its CRC covers)
_HEADER_BYTES, _MAGIC, _VERSION, _RUN, _RESULT = P.HEADER_BYTES, P.MAGIC, P.VERSION, P.RUN, P.RESULT
_UINT8, _UINT64, _INT32, _empty = np.dtype(np.uint8), np.dtype(np.uint64), np.dtype(np.int32), np.empty


def runner_path() -> Path | None:
    """The device runner for this machine: $EDGESNN_RUNNER, else the one the install built, else None."""
    override = os.environ.get(RUNNER_ENV)
    if override:
        return Path(override)
    built = Path(edgesnn.__file__).resolve().parent / "_lib" / "edgesnn-runner"
    if built.is_file():
        return built
    found = shutil.which("edgesnn-runner")
    return Path(found) if found else None


@dataclass
class RemoteProgram:
    """A model prepared for the runner: its .esnn bytes, and what LOADED reported once loaded."""

    model: object
    data: bytes
    loaded: dict | None = None     # program_bytes, arena_bytes, layer_count, shapes (from LOADED)
    link_generation: int = -1      # the link it was loaded over; another link loads it again
    layer_count: int = 0
    output_values: int = 0         # OH * OW * OC of one sample
    run_frame: "_RunFrame | None" = None   # the last run's fixed request part and result shapes

    def __post_init__(self):
        self.layer_count = len(self.model.layers)
        self.output_values = int(np.prod(self.model.output_shape))


class RemoteDevice(Device):
    """A device runner (native/runner) over stdio, TCP or a serial line, with timeouts and reconnection."""

    name = "remote"
    checks_input_range = True      # the runner's engine refuses out-of-range input (ERROR engine, input)
    returns_counts = True
    repeats_dense_input = True
    runs_over_time = True          # run_over_time: RUN_TRACE (the output after every timestep, early exit)

    def __init__(self, command=None, *, address: str | None = None, serial: str | None = None, listen: bool = False,
                 timeout_s: float = 5.0, reconnect: bool = False, memory_bytes: int | None = None,
                 frame_bytes: int | None = None, spin_us: float = SPIN_US_DEFAULT, name: str = "remote"):
        """One of `command` (the runner and its arguments, e.g. ["qemu-aarch64", path]; default: the
        runner this install built), `address` ("HOST:PORT" of a runner started with --listen) or
        `serial` (a device path). `listen`: start `command` with --listen 127.0.0.1:0 and connect over
        TCP. `memory_bytes` / `frame_bytes`: the budget and frame limit given to a spawned runner.
        `spin_us`: how long a wait for a reply polls without sleeping before it sleeps (0: never;
        transport.py says why and when it backs off; the runner has its own, --spin-us)."""
        if sum(x is not None for x in (command, address, serial)) > 1:
            raise ValueError("give one of command, address or serial")
        if command is None and address is None and serial is None:
            found = runner_path()
            if found is None:
                raise DeviceError(f"no device runner found: build it (`python -m ziglang build runner` in native/), "
                                  f"set {RUNNER_ENV}, or give command=, address= or serial=")
            command = [str(found)]
        if isinstance(command, (str, os.PathLike)):
            command = [str(command)]
        self.command = None if command is None else list(command)
        if self.command is not None:
            if memory_bytes is not None:
                self.command += ["--memory", str(int(memory_bytes))]
            if frame_bytes is not None:
                self.command += ["--frame-bytes", str(int(frame_bytes))]
        self.address, self.serial, self.listen = address, serial, listen
        self.timeout_s, self.reconnect_on_failure, self.name = float(timeout_s), reconnect, name
        if not 0 <= spin_us <= 1e6:
            raise ValueError(f"spin_us must lie in [0, 1e6] microseconds, got {spin_us!r}")
        self.spin_us = float(spin_us)
        self._link: FdLink | None = None
        self._process_link: ProcessLink | None = None   # the spawned runner behind a TCP link (listen=True)
        self._sequence = 0
        self._generation = 0
        self._runner_info: dict | None = None
        self._current: RemoteProgram | None = None      # the program the runner holds now
        self._failure: str | None = None                 # why the link went down

    # -- the link ----------------------------------------------------------------------------------
    def connect(self) -> dict:
        """Open the link and say HELLO; returns the runner's INFO. Raises DeviceError on failure."""
        self._close_link()
        try:
            self._link = self._open_link()
            self._link.spin_s = self.spin_us * 1e-6
            self._generation += 1
            self._current = None
            self._sequence = 0
            self._runner_info = P.decode_info(self._request(P.HELLO, b""))
        except (LinkError, P.ProtocolError) as exc:
            self._close_link()
            self._failure = str(exc)
            raise DeviceError(f"device {self.name!r}: cannot connect: {exc}") from None
        self._failure = None
        return self._runner_info

    def reconnect(self) -> dict:
        """Close the link (a spawned runner is ended) and connect again; the model is loaded again on next use."""
        return self.connect()

    def _open_link(self) -> FdLink:
        if self.serial is not None:
            return SerialLink(self.serial)
        if self.address is not None:
            host, port = parse_address(self.address)
            return TcpLink(host, port, self.timeout_s)
        if not self.listen:
            return ProcessLink(self.command)
        process = ProcessLink(self.command + ["--listen", "127.0.0.1:0"])
        self._process_link = process
        line = process.recv_exact(1, time.monotonic() + self.timeout_s)
        while not line.endswith(b"\n"):
            line += process.recv_exact(1, time.monotonic() + self.timeout_s)
        text = line.decode("ascii", "replace").split()
        if len(text) != 2 or text[0] != "listening":
            raise LinkError(f"runner printed {line!r}, expected 'listening IP:PORT'")
        host, port = parse_address(text[1])
        return TcpLink(host, port, self.timeout_s)

    def _close_link(self) -> None:
        for link in (self._link, self._process_link):
            if link is not None:
                link.close()
        self._link = self._process_link = None

    def close(self) -> None:
        """Close the link; a runner this device started is ended."""
        self._close_link()
        self._current = None

    @property
    def runner_pid(self) -> int | None:
        """The process id of the runner this device started (stdio or listen=True) while it runs, else None."""
        link = self._process_link if self._process_link is not None else self._link
        process = getattr(link, "process", None) if isinstance(link, ProcessLink) else None
        return None if process is None else process.pid

    def _ensure_link(self) -> FdLink:
        if self._link is not None:
            return self._link
        if self._failure is not None and not self.reconnect_on_failure:
            raise DeviceError(f"device {self.name!r}: the link is down ({self._failure}); call device.reconnect() "
                              f"or create the device with reconnect=True")
        self.connect()
        return self._link

    def _request(self, kind: int, payload, timeout_s: float | None = None) -> bytes:
        """Send one request and return its reply payload; LinkError / ProtocolError / _RunnerError on failure."""
        link = self._link
        sequence = self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        deadline = _monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        link.send(P.encode(kind, sequence, payload), deadline)
        return self._reply(kind, sequence, link.recv_exact(P.HEADER_BYTES, deadline), deadline)

    def _reply(self, kind: int, sequence: int, header: bytes, deadline: float) -> bytes:
        """The checked payload of the reply to request `kind` number `sequence` whose header arrived."""
        reply, reply_sequence, length, payload_crc = P.parse_header(header, self._payload_limit)
        body = self._link.recv_exact(length, deadline)
        if _crc32(body) != payload_crc:
            raise P.ProtocolError(f"payload CRC-32 mismatch ({length:,} bytes of "
                                  f"{P.TYPE_NAMES.get(reply, hex(reply))}): corrupted on the link")
        if reply_sequence != sequence:
            raise P.ProtocolError(f"reply to {P.TYPE_NAMES[kind]} has sequence number {reply_sequence}, expected "
                                  f"{sequence}: the link is out of step")
        if reply != P.REPLY_OF[kind]:
            if reply == P.ERROR:
                code, _, message = P.decode_error(body)
                raise _RunnerError(code, message)
            raise P.ProtocolError(f"reply to {P.TYPE_NAMES[kind]} is of type {P.TYPE_NAMES.get(reply, hex(reply))}")
        return body

    @property
    def _payload_limit(self) -> int:
        info = self._runner_info
        return (info["frame_bytes_max"] if info else 1 << 30) + 64

    def _run_exchange(self, frame: "_RunFrame", x5: np.ndarray):
        """A RUN request of `x5` whose RESULT is read straight into new potentials and counts arrays:
        returns (potentials, counts), or the payload bytes of a RESULT that does not match `frame`
        (the caller calls it malformed). Faults raise as in `_request`.

        The fast path of model.forward: the frame goes out in one writev (header, RunRequest, the input
        array itself) and the reply comes in with one readv scattered over the header, the counts'
        and the potentials' own memory (nothing is copied after); only a reply that is not the RESULT
        expected goes the general way (`_reply`), which names what is wrong with it."""
        link = self._link
        sequence = self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        deadline = _monotonic() + self.timeout_s
        length = frame.request_bytes + x5.nbytes
        head = _HEAD20.pack(_MAGIC, _VERSION, _RUN, sequence, length, _crc32(x5, frame.request_crc))
        link.send_parts((head + _U32.pack(_crc32(head)), frame.request, x5), _HEADER_BYTES + length, deadline)
        counts, potentials = _empty(frame.counts_shape, _UINT64), _empty(frame.potentials_shape, _INT32)
        parts, total = (frame.head, counts, potentials), frame.total
        got = link.recv_into(parts, deadline, 0, total)
        while got < _HEADER_BYTES:
            got += link.recv_into(_rest(parts, got), deadline, got, total)
        head = frame.head
        magic, version, kind, reply_sequence, reply_length, payload_crc, header_crc = _HEADER.unpack_from(head)
        if (kind != _RESULT or reply_length != frame.result_bytes or reply_sequence != sequence or magic != _MAGIC
                or version != _VERSION or _crc32(head[:20]) != header_crc):
            arrived = _joined(parts, got)
            link.unread(arrived[_HEADER_BYTES:])   # what followed the header is its payload's start
            return self._reply(_RUN, sequence, arrived[:_HEADER_BYTES], deadline)
        while got < total:
            got += link.recv_into(_rest(parts, got), deadline, got, total)
        if _crc32(potentials, _crc32(counts, _crc32(head[_HEADER_BYTES:]))) != payload_crc:
            raise P.ProtocolError(f"payload CRC-32 mismatch ({reply_length:,} bytes of RESULT): corrupted on the link")
        if _PAIR.unpack_from(head, _HEADER_BYTES) != frame.pair:
            return _joined(parts, total)[_HEADER_BYTES:]
        return potentials, counts

    def _call(self, kind: int, payload=b"", *, program: RemoteProgram | None = None,
              frame: "_RunFrame | None" = None):
        """A request with the failure policy: link faults close the link and raise DeviceError (after one
        reconnect and retry when reconnect=True); the runner's ERROR replies raise at once. With `frame`:
        a RUN of the array `payload` through `_run_exchange`."""
        attempts = 2 if self.reconnect_on_failure else 1
        for attempt in range(attempts):
            try:
                self._ensure_link()
                if program is not None and (self._current is not program
                                            or program.link_generation != self._generation):
                    self._load(program)
                if frame is not None:
                    return self._run_exchange(frame, payload)
                return self._request(kind, payload)
            except _RunnerError as exc:
                raise self._runner_error(kind, exc) from None
            except (LinkError, P.ProtocolError) as exc:
                self._close_link()
                self._failure = str(exc)
                if attempt + 1 == attempts:
                    raise DeviceError(f"device {self.name!r}: {P.TYPE_NAMES[kind]} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _runner_error(self, kind: int, exc: "_RunnerError") -> Exception:
        if exc.code == "engine" and exc.message.startswith(f"engine status {P.STATUS_INPUT} "):
            return ValueError(f"input values out of range for the model (device {self.name!r}): {exc.message}")
        return DeviceError(f"device {self.name!r} refused {P.TYPE_NAMES[kind]} ({exc.code}): {exc.message}")

    def _load(self, program: RemoteProgram) -> None:
        self._current = None
        try:
            program.loaded = P.decode_loaded(self._request(P.LOAD, program.data))
        except _RunnerError as exc:
            raise exc
        program.link_generation = self._generation
        self._current = program

    # -- the Device API ----------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        if self._link is None:
            self._ensure_link()
        runner = self._runner_info
        return DeviceInfo(name=self.name, architecture=runner["architecture"], engine_version=runner["engine_version"],
                          memory_bytes=runner["memory_bytes"], file_bytes_max=runner["frame_bytes_max"],
                          layers_max=runner["layers_max"],
                          channels_max=runner["channels_max"], layer_kinds=runner["layer_kinds"],
                          weight_bits=runner["weight_bits"], activation_bits=runner["activation_bits"],
                          extra={"link": self._link.description, "frame_bytes_max": runner["frame_bytes_max"],
                                 "protocol_version": runner["protocol_version"]})

    def check(self, model) -> MappingReport:
        """The runner's limits (INFO) against the C library's sizing of `model` (exact for a 64-bit runner);
        the model file must fit one LOAD frame (frame_bytes_max)."""
        return check_against(self.info(), model, native_memory_figures(model))

    def load(self, model) -> RemoteProgram:
        program = RemoteProgram(model, model.to_bytes())
        if len(program.data) > self.info().extra["frame_bytes_max"]:
            raise DeviceError(f"device {self.name!r}: the model file is {len(program.data):,} bytes, the runner takes "
                              f"frames up to {self.info().extra['frame_bytes_max']:,} bytes (--frame-bytes)")
        self._call(P.STATS, program=program)  # loads it now, so a model that does not fit is refused here
        return program

    def stats(self) -> dict:
        """The runner's counters (frames received / rejected, loads, runs, errors, bytes, run time)."""
        return P.decode_stats(self._call(P.STATS))

    def reset(self) -> None:
        """Ask the runner to drop its model (it is loaded again on next use)."""
        self._call(P.RESET)
        self._current = None

    def run(self, program, x5: np.ndarray, timesteps: int | None = None) -> tuple[np.ndarray, Statistics]:
        if not isinstance(program, RemoteProgram):
            program = self.program_of(program)
        timesteps = x5.shape[1] if timesteps is None else int(timesteps)
        potentials, counts = self.run_counts(program, x5, timesteps)
        return potentials, Statistics.from_counts(program.model.layers, counts, x5.shape[0], timesteps, self.name)

    def run_counts(self, program, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        if type(program) is not RemoteProgram:
            program = self.program_of(program)
        if type(x5) is not np.ndarray or x5.dtype is not _UINT8 or not x5.flags.c_contiguous:
            x5 = np.ascontiguousarray(x5, dtype=np.uint8)
        batch, input_timesteps = x5.shape[:2]
        if input_timesteps > 1 and x5.strides[1] == 0:   # a dense input (Model.check_input's stride-0 view)
            x5, input_timesteps = np.ascontiguousarray(x5[:, :1]), 1
        frame = program.run_frame
        if frame is None or frame.key != (batch, input_timesteps, timesteps) or frame.info is not self._runner_info:
            chunk = self._chunk_samples(program, x5[0].nbytes, batch)
            if chunk < batch:
                return self._run_chunks(program, x5, input_timesteps, timesteps, chunk)
            frame = program.run_frame = _RunFrame(program, batch, input_timesteps, timesteps, self._runner_info)
        return self._run_frame(program, frame, x5)

    def _run_frame(self, program: RemoteProgram, frame: "_RunFrame", x5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One RUN of `x5` (frame.key's batch): (potentials, counts)."""
        result = self._call(P.RUN, x5, program=program, frame=frame)
        if type(result) is not tuple:
            self._close_link()
            self._failure = "malformed RESULT"
            raise DeviceError(f"device {self.name!r}: RESULT of {len(result)} bytes does not match the model "
                              f"({program.layer_count} layers, {frame.key[0]} x output {program.model.output_shape})")
        return result

    def _run_chunks(self, program: RemoteProgram, x5: np.ndarray, input_timesteps: int, timesteps: int,
                    chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch over several RUN frames of `chunk` samples (the runner's frame limit)."""
        outputs, counts, frame = [], None, None
        for start in range(0, x5.shape[0], chunk):
            part = x5[start:start + chunk]
            if frame is None or frame.key[0] != part.shape[0]:
                frame = _RunFrame(program, part.shape[0], input_timesteps, timesteps, self._runner_info)
            potentials, part_counts = self._run_frame(program, frame, part)
            counts = part_counts if counts is None else counts + part_counts
            outputs.append(potentials)
        return np.concatenate(outputs), counts

    def run_over_time(self, model, x5: np.ndarray, timesteps: int,
                      early_exit: int | None = None) -> tuple[np.ndarray, np.ndarray, Statistics]:
        """RUN_TRACE frames (docs/protocol.md): the output after every timestep, and the early exit."""
        program = self.program_of(model)
        if type(x5) is not np.ndarray or x5.dtype is not _UINT8 or not x5.flags.c_contiguous:
            x5 = np.ascontiguousarray(x5, dtype=np.uint8)
        timesteps, (batch, input_timesteps) = int(timesteps), x5.shape[:2]
        if input_timesteps > 1 and x5.strides[1] == 0:   # a dense input (Model.check_input's stride-0 view)
            x5, input_timesteps = np.ascontiguousarray(x5[:, :1]), 1
        layers, values, shape = program.layer_count, program.output_values, program.model.output_shape
        margin = 0 if early_exit is None else int(early_exit)
        chunk = self._chunk_samples(program, x5[0].nbytes, batch, 4 + 4 * values * (1 + timesteps))
        outputs, used, counts = [], [], None
        for start in range(0, batch, chunk):
            part = x5[start:start + chunk]
            samples = part.shape[0]
            body = self._call(P.RUN_TRACE, _RUN_REQUEST.pack(samples, input_timesteps, timesteps, margin)
                              + part.tobytes(), program=program)
            stats_end = 8 + 40 * layers
            if (len(body) != stats_end + samples * (4 + 4 * values * (1 + timesteps))
                    or _PAIR.unpack_from(body) != (layers, samples * values)):
                self._close_link()
                self._failure = "malformed TRACE"
                raise DeviceError(f"device {self.name!r}: TRACE of {len(body)} bytes does not match the model "
                                  f"({layers} layers, {samples} x {timesteps} timesteps x output {shape})")
            part_counts = np.frombuffer(body, np.uint64, layers * STATS_VALUES, 8).reshape(layers, STATS_VALUES)
            counts = part_counts.copy() if counts is None else counts + part_counts
            used.append(np.frombuffer(body, np.uint32, samples, stats_end).astype(np.int64))
            trace_start = stats_end + 4 * samples * (1 + values)
            outputs.append(np.frombuffer(body, np.int32, samples * timesteps * values, trace_start)
                           .reshape(samples, timesteps, *shape).copy())
        outputs = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        return (outputs, np.concatenate(used),
                Statistics.from_counts(model.layers, counts, batch, timesteps, self.name))

    def _chunk_samples(self, program: RemoteProgram, sample_bytes: int, batch: int,
                       result_per_sample: int | None = None) -> int:
        """Samples per RUN frame: the request and its RESULT must each fit the runner's frame limit."""
        limit = self._frame_limit()
        result_per_sample = 4 * program.output_values if result_per_sample is None else result_per_sample
        if P.RUN_REQUEST.size + batch * sample_bytes <= limit and \
                8 + 40 * program.layer_count + batch * result_per_sample <= limit:
            return batch
        return max(1, min((limit - P.RUN_REQUEST.size) // max(sample_bytes, 1),
                          (limit - 8 - 40 * program.layer_count) // result_per_sample))

    def _frame_limit(self) -> int:
        if self._runner_info is None:
            self._ensure_link()
        return self._runner_info["frame_bytes_max"]

    def program_of(self, model) -> RemoteProgram:
        program = model.device_cache.get(self)
        if program is None:
            program = model.device_cache.setdefault(self, self.load(model))
        return program

    def __repr__(self) -> str:
        where = self._link.description if self._link is not None else "not connected"
        return f"<RemoteDevice {self.name!r} {where}>"


class _RunFrame:
    """What RUN requests of one (batch, input_timesteps, timesteps) share: the RunRequest bytes and
    their CRC, the RESULT's size and shapes, and a buffer for its header and first 8 bytes."""

    __slots__ = ("key", "info", "request", "request_bytes", "request_crc", "result_bytes", "total", "head",
                 "pair", "counts_shape", "potentials_shape")

    def __init__(self, program: RemoteProgram, batch: int, input_timesteps: int, timesteps: int, info):
        self.key, self.info = (batch, input_timesteps, timesteps), info
        self.request = _RUN_REQUEST.pack(batch, input_timesteps, timesteps, 0)
        self.request_bytes, self.request_crc = len(self.request), _crc32(self.request)
        layers, values = program.layer_count, batch * program.output_values
        self.result_bytes = 8 + 40 * layers + 4 * values
        self.total = _HEADER_BYTES + self.result_bytes
        self.head = memoryview(bytearray(_HEADER_BYTES + 8))   # the header, then layer count and values
        self.pair = (layers, values)
        self.counts_shape = (layers, STATS_VALUES)
        self.potentials_shape = (batch, *program.model.output_shape)


def _bytes_views(parts) -> list[memoryview]:
    return [part if type(part) is memoryview else memoryview(part).cast("B") for part in parts]


def _rest(parts, offset: int) -> list[memoryview]:
    """The buffers `parts` from byte `offset` of their concatenation on (for a reply that came in pieces)."""
    rest = []
    for view in _bytes_views(parts):
        if offset < len(view):
            rest.append(view[offset:])
        offset = max(0, offset - len(view))
    return rest


def _joined(parts, count: int) -> bytes:
    """The first `count` bytes of the buffers `parts`, end to end."""
    return b"".join(bytes(view) for view in _bytes_views(parts))[:count]


class _RunnerError(Exception):
    """An ERROR reply: the runner answered, and refused."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
