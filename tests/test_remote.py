"""The `remote` device and the device runner (native/runner, docs/protocol.md), all real: the runner
binary built from this tree, real pipes, sockets, a pty, and the aarch64 build under qemu-aarch64.

- the protocol round trip, frame by frame;
- bit-exactness remote vs cpu on random models and inputs, over stdio, TCP and a pty;
- the memory budget: a model that just fits loads, one byte less is refused with the reason;
- every fault of issue 13: runner killed mid-run, restarted, slow (timeouts), frames corrupted,
  truncated, oversized or out of sequence in either direction, wrong protocol version: a clear
  DeviceError within the timeout, reconnection when asked, the runner alive after any bytes;
- the aarch64-linux-musl runner under qemu-aarch64: static, bit-exact, and its C library's own
  program / arena figures equal what `check` reports.

The profiles' fit verdicts and the Cortex-M4 C library's figures: tests/test_devices_profiles.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_c_embedding import ROOT, models  # noqa: E402
from test_cross import EM_AARCH64, PT_INTERP, elf_header  # noqa: E402

pytest.importorskip("edgesnn.native")
from edgesnn_remote import RemoteDevice  # noqa: E402
from edgesnn_remote import protocol as P  # noqa: E402

NATIVE = ROOT / "native"
MNIST = ROOT / "edgesnn" / "data" / "mnist_cnn_4bit.esnn"


def build_runner(prefix: Path, target: str = "native") -> Path:
    result = subprocess.run([sys.executable, "-m", "ziglang", "build", "runner", "-Doptimize=ReleaseSafe",
                             f"-Dtarget={target}", "--prefix", str(prefix)], cwd=NATIVE, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"zig build runner -Dtarget={target} failed:\n{result.stderr}"
    return prefix / "bin" / "edgesnn-runner"


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    return build_runner(tmp_path_factory.mktemp("runner-host"))


@pytest.fixture(scope="module")
def mnist() -> es.Model:
    return es.Model.load(MNIST)


def random_input(model, batch, rng, timesteps=None, zero_fraction=0.5):
    shape = (batch, *model.input_shape) if timesteps is None else (batch, timesteps, *model.input_shape)
    x = rng.integers(0, 1 << model.input_bits, shape).astype(np.uint8)
    x[rng.random(x.shape) < zero_fraction] = 0
    return x


def assert_bit_exact(model, device, rng, timesteps=(1, 3)):
    for t in timesteps:
        x = random_input(model, 3, rng)
        expected = model.forward(x, timesteps=t, device="cpu")
        expected_stats = model.statistics
        got = model.forward(x, timesteps=t, device=device)
        np.testing.assert_array_equal(got, expected)
        assert model.statistics.layers == expected_stats.layers
    train = random_input(model, 2, rng, timesteps=4, zero_fraction=0.8)   # a spike train
    np.testing.assert_array_equal(model.forward(train, device=device), model.forward(train, device="cpu"))


class RawLink:
    """Frames written straight to a runner's stdin, replies read from its stdout (for protocol tests)."""

    def __init__(self, runner: Path, *args: str):
        self.process = subprocess.Popen([str(runner), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, bufsize=0)
        self.link = None

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)

    def reply(self, timeout_s: float = 5.0) -> tuple[P.Header, bytes]:
        from edgesnn_remote.transport import FdLink

        if self.link is None:   # one link for all replies: bytes it read past one reply are the next's
            self.link = FdLink(self.process.stdout.fileno(), self.process.stdin.fileno(), "raw")
        link = self.link
        deadline = time.monotonic() + timeout_s
        header = P.decode_header(link.recv_exact(P.HEADER_BYTES, deadline), 1 << 30)
        body = link.recv_exact(header.length, deadline)
        P.check_payload(header, body)
        return header, body

    def request(self, kind: int, sequence: int, payload=b"") -> tuple[P.Header, bytes]:
        self.send(P.encode(kind, sequence, payload))
        return self.reply()

    def error(self) -> tuple[str, str]:
        header, body = self.reply()
        assert header.kind == P.ERROR, P.TYPE_NAMES.get(header.kind)
        code, _, message = P.decode_error(body)
        return code, message

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=10) == 0  # EOF on stdin: a clean exit, never a crash


@pytest.fixture
def raw(runner):
    link = RawLink(runner, "--timeout-ms", "300", "--frame-bytes", "65536")
    yield link
    if link.process.poll() is None:
        link.close()


# -- the protocol, frame by frame -------------------------------------------------------------------


def test_protocol_round_trip(raw, mnist):
    header, body = raw.request(P.HELLO, 100)
    assert (header.kind, header.sequence) == (P.INFO, 100)
    info = P.decode_info(body)
    assert info["protocol_version"] == P.VERSION == 2 and info["frame_bytes_max"] == 65536
    # the runner reports the engine's own limits (native/src/limits.zig, one home): every layer kind
    # (concat included: a second list in the runner had missed it), bit width and count limit
    assert info["layer_kinds"] == es.layers.KINDS
    assert info["weight_bits"] == es.layers.WEIGHT_BITS and info["activation_bits"] == es.layers.ACTIVATION_BITS
    from test_native import zig_limits
    limits = zig_limits()
    assert (info["layers_max"], info["channels_max"]) == (limits["layers_max"], limits["channels_max"])

    header, body = raw.request(P.LOAD, 101, mnist.to_bytes())
    loaded = P.decode_loaded(body)
    assert header.kind == P.LOADED
    assert (loaded["program_bytes"], loaded["arena_bytes"]) == es.devices.native_memory_figures(mnist)
    assert loaded["input_shape"] == mnist.input_shape and loaded["output_shape"] == mnist.output_shape

    x = random_input(mnist, 2, np.random.default_rng(0))
    header, body = raw.request(P.RUN, 102, P.RUN_REQUEST.pack(2, 1, 1, 0) + x.tobytes())
    assert header.kind == P.RESULT
    layers, values = struct.unpack_from("<II", body)
    potentials = np.frombuffer(body, np.int32, values, 8 + 40 * layers).reshape(2, *mnist.output_shape)
    np.testing.assert_array_equal(potentials, mnist.forward(x, device="cpu"))

    header, body = raw.request(P.STATS, 103)
    stats = P.decode_stats(body)
    assert (stats["loads"], stats["runs"], stats["frames_received"]) == (1, 1, 4)
    assert raw.request(P.RESET, 104)[0].kind == P.OK
    raw.send(P.encode(P.RUN, 105, P.RUN_REQUEST.pack(1, 1, 1, 0) + x[:1].tobytes()))
    code, message = raw.error()
    assert code == "state" and "before LOAD" in message


def test_timesteps_max_bounds_the_work_of_one_run(runner, mnist):
    link = RawLink(runner, "--timesteps-max", "4")
    assert P.decode_info(link.request(P.HELLO, 1)[1])["timesteps_max"] == 4
    link.request(P.LOAD, 2, mnist.to_bytes())
    frame = np.zeros(mnist.input_shape, np.uint8).tobytes()
    assert link.request(P.RUN, 3, P.RUN_REQUEST.pack(1, 1, 4, 0) + frame)[0].kind == P.RESULT
    link.send(P.encode(P.RUN, 4, P.RUN_REQUEST.pack(1, 1, 5, 0) + frame))
    code, message = link.error()
    assert code == "payload" and "timesteps <= 4" in message
    link.close()


def test_a_bad_run_request_is_refused_with_what_was_expected(raw, mnist):
    raw.request(P.HELLO, 1)
    raw.request(P.LOAD, 2, mnist.to_bytes())
    raw.send(P.encode(P.RUN, 3, P.RUN_REQUEST.pack(2, 1, 1, 0) + b"\0" * 10))
    code, message = raw.error()
    assert code == "payload" and "1568 expected" in message
    raw.send(P.encode(P.RUN, 4, b"\0" * 3))
    assert raw.error()[0] == "payload"
    raw.send(P.encode(0x42, 5))
    assert raw.error()[0] == "unknown_type"
    frame = bytes(int(np.prod(mnist.input_shape)))
    raw.send(P.encode(P.RUN_TRACE, 6, P.RUN_REQUEST.pack(1, 1, 2, 1 << 31) + frame))   # margin > 2^31 - 1
    code, message = raw.error()
    assert code == "payload" and "margin 2147483648" in message
    header, body = raw.request(P.RUN_TRACE, 7, P.RUN_REQUEST.pack(1, 1, 3, 0) + frame)
    values = int(np.prod(mnist.output_shape))
    assert header.kind == P.TRACE and len(body) == 8 + 40 * len(mnist.layers) + 4 + 4 * values * (1 + 3)
    raw.send(P.encode(P.LOAD, 8, b"not a model"))
    code, message = raw.error()
    assert code == "engine" and message.startswith("engine status 2 (truncated)")


# -- frames the runner receives broken: it answers ERROR and keeps serving ---------------------------


def hello_still_answers(raw, sequence=50):
    header, _ = raw.request(P.HELLO, sequence)
    assert header.kind == P.INFO


def test_runner_corrupted_payload_is_a_checksum_error(raw):
    frame = bytearray(P.encode(P.LOAD, 1, b"x" * 100))
    frame[P.HEADER_BYTES + 7] ^= 0x10
    raw.send(bytes(frame))
    code, message = raw.error()
    assert code == "checksum" and "corrupted" in message
    hello_still_answers(raw)


def test_runner_corrupted_header_is_refused_and_the_stream_resynchronized(raw):
    frame = bytearray(P.encode(P.LOAD, 1, b"x" * 100))
    frame[13] ^= 0x01   # the length: caught by the header CRC, not waited for
    raw.send(bytes(frame))
    assert raw.error()[0] == "header"
    raw.send(b"garbage that is not a frame at all" * 3)
    code, message = raw.error()
    assert code == "header" and "magic" in message
    hello_still_answers(raw)


def test_runner_truncated_frame_times_out_with_an_error(raw):
    raw.send(P.encode(P.LOAD, 1, b"y" * 1000)[:P.HEADER_BYTES + 10])
    started = time.monotonic()
    code, message = raw.error()
    assert code == "truncated" and time.monotonic() - started < 3
    hello_still_answers(raw)


def test_runner_oversized_frame_is_refused(raw):
    raw.send(P.encode(P.LOAD, 1, b"z" * 70000))   # the fixture's runner takes 65536
    code, message = raw.error()
    assert code == "oversized" and "65536" in message
    hello_still_answers(raw)


def test_runner_out_of_sequence_frame_is_refused(raw):
    raw.request(P.HELLO, 10)
    raw.send(P.encode(P.STATS, 12))
    code, message = raw.error()
    assert code == "sequence" and "expected 11" in message
    assert raw.request(P.STATS, 11)[0].kind == P.STATS_REPLY


def test_runner_wrong_version_is_refused_and_the_payload_skipped(raw):
    raw.send(P.encode(P.HELLO, 1, b"abc", version=P.VERSION + 1))
    code, message = raw.error()
    assert code == "version" and f"version {P.VERSION + 1}" in message and f"version {P.VERSION}" in message
    hello_still_answers(raw)


def test_runner_survives_random_bytes(raw):
    rng = np.random.default_rng(7)
    for _ in range(20):
        raw.send(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
    time.sleep(0.4)
    # replies to the garbage (if any) are drained by the next HELLO's reply search
    raw.send(P.encode(P.HELLO, 77))
    while True:
        header, _ = raw.reply()
        if header.kind == P.INFO and header.sequence == 77:
            break
    assert raw.process.poll() is None


# -- the remote device: bit-exact over every link ----------------------------------------------------


def test_remote_over_stdio_is_bit_exact_with_cpu(runner):
    rng = np.random.default_rng(3)
    with RemoteDevice([runner]) as device:
        for model in models().values():
            assert_bit_exact(model, device, rng)


def test_remote_on_random_models_is_bit_exact_with_cpu(runner):
    """The random models and inputs of test_native_bitexact (every kind, neuron, pool, bit width, T)."""
    hypothesis = pytest.importorskip("hypothesis")
    from test_native_bitexact import inputs, models as random_models

    device = RemoteDevice([runner])

    @hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(data=hypothesis.strategies.data())
    def check(data):
        model = data.draw(random_models())
        x5 = data.draw(inputs(model))
        expected = model.forward(x5, device="cpu")
        expected_stats = model.statistics
        np.testing.assert_array_equal(model.forward(x5, device=device), expected)
        assert model.statistics.layers == expected_stats.layers

    try:
        check()
    finally:
        device.close()


def test_remote_over_time_is_bit_exact_with_cpu(runner):
    """per_timestep and early_exit over the link (RUN_TRACE): outputs, timesteps used and statistics
    equal the cpu device's, on random models and inputs; a small frame limit splits the batch."""
    hypothesis = pytest.importorskip("hypothesis")
    from test_native_bitexact import inputs, models as random_models

    devices = [RemoteDevice([runner]), RemoteDevice([runner], frame_bytes=8192)]

    @hypothesis.settings(max_examples=15, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(data=hypothesis.strategies.data(), margin=hypothesis.strategies.sampled_from([None, 1, 3]),
                      per_timestep=hypothesis.strategies.booleans(), small=hypothesis.strategies.booleans())
    def check(data, margin, per_timestep, small):
        model = data.draw(random_models())
        x5 = data.draw(inputs(model))
        values = int(np.prod(model.output_shape))
        one_trace = 8 + 40 * len(model.layers) + 4 + 4 * values * (1 + x5.shape[1])   # TRACE of one sample
        if len(model.to_bytes()) > 8000 or one_trace > 8192 or values < 2:
            small, margin = False, None if values < 2 else margin
        kw = dict(per_timestep=per_timestep or margin is None, early_exit=margin)
        expected = model.forward(x5, device="cpu", **kw)
        expected_stats = model.statistics
        got = model.forward(x5, device=devices[small], **kw)
        np.testing.assert_array_equal(got, expected)
        assert model.statistics.layers == expected_stats.layers
        np.testing.assert_array_equal(model.statistics.timesteps_used, expected_stats.timesteps_used)

    try:
        check()
    finally:
        for device in devices:
            device.close()


def test_remote_over_tcp_is_bit_exact_and_reconnects(runner, mnist):
    server = subprocess.Popen([str(runner), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        line = server.stdout.readline().decode().split()
        assert line[0] == "listening"
        rng = np.random.default_rng(5)
        device = RemoteDevice(address=line[1])
        assert_bit_exact(mnist, device, rng, timesteps=(1,))
        device.close()
        # the runner accepts the next connection: another host (or this one, reconnecting) is served
        again = RemoteDevice(address=line[1])
        x = random_input(mnist, 2, rng)
        np.testing.assert_array_equal(mnist.forward(x, device=again), mnist.forward(x, device="cpu"))
        again.reconnect()
        np.testing.assert_array_equal(mnist.forward(x, device=again), mnist.forward(x, device="cpu"))
        again.close()
    finally:
        server.kill()
        server.wait()


def test_remote_spawned_with_listen_uses_tcp(runner, mnist):
    with RemoteDevice([runner], listen=True) as device:
        assert "(tcp)" in device.info().extra["link"]
        assert_bit_exact(mnist, device, np.random.default_rng(6), timesteps=(1,))


def test_remote_over_a_pty_serial_line(runner, mnist):
    master, slave = os.openpty()
    tty.setraw(slave)    # as a serial line is configured before use
    server = subprocess.Popen([str(runner), "--device", os.ttyname(slave)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        device = RemoteDevice(serial=master)
        assert "(serial)" in device.info().extra["link"]
        assert_bit_exact(mnist, device, np.random.default_rng(8), timesteps=(1,))
        device.close()
    finally:
        server.kill()
        server.wait()
        os.close(slave)


# -- the memory budget --------------------------------------------------------------------------------


def test_a_model_that_just_fits_the_budget_loads_and_one_byte_less_is_refused(runner, mnist):
    program, arena = es.devices.native_memory_figures(mnist)
    x = random_input(mnist, 1, np.random.default_rng(9))
    with RemoteDevice([runner], memory_bytes=program + arena) as device:
        assert device.check(mnist).fits
        np.testing.assert_array_equal(mnist.forward(x, device=device), mnist.forward(x, device="cpu"))
    with RemoteDevice([runner], memory_bytes=program + arena - 1) as device:
        report = device.check(mnist)
        budget = program + arena - 1
        assert not report.fits and report.reason == (f"memory: program {program:,} B + arena {arena:,} B = "
                                                     f"{program + arena:,} B, this device has {budget:,} B (1 B too many)")
        with pytest.raises(es.DeviceError, match=rf"does not fit: program {program} B \+ arena {arena} B"):
            mnist.forward(x, device=device)
    # a budget under the loaded model alone: refused before the engine writes a byte of it
    with RemoteDevice([runner], memory_bytes=program - 1) as device:
        assert not device.check(mnist).fits
        with pytest.raises(es.DeviceError, match=rf"\(fit\): does not fit: the model needs {program} B of program "
                                                 rf"memory, the runner's memory budget is {program - 1} B"):
            mnist.forward(x, device=device)
        assert device.stats()["loads"] == 0
    # the file travels in one LOAD frame: a runner with smaller frames says so in check, and load refuses it
    file_bytes = len(mnist.to_bytes())
    with RemoteDevice([runner], frame_bytes=file_bytes - 1) as device:
        report = device.check(mnist)
        assert report.unsupported == [f"model file: {file_bytes:,} B, this device has room for {file_bytes - 1:,} B "
                                      f"(1 B too many)"]
        with pytest.raises(es.DeviceError, match="--frame-bytes"):
            mnist.forward(x, device=device)


# -- faults seen by the host ----------------------------------------------------------------------------


def slow_batch(model, samples=3000):
    return random_input(model, samples, np.random.default_rng(10), zero_fraction=0.0)


def test_runner_killed_mid_run_is_a_device_error_then_reconnect_works(runner, mnist):
    device = RemoteDevice([runner], timeout_s=30)
    x = random_input(mnist, 1, np.random.default_rng(11))
    mnist.forward(x, device=device)
    pid = device._link.process.pid
    # stopped first, so that however fast this CPU is, the run is still unanswered when the kill comes
    os.kill(pid, signal.SIGSTOP)
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(es.DeviceError, match="killed by signal 9"):
        mnist.forward(slow_batch(mnist), device=device)
    assert time.monotonic() - started < 10
    with pytest.raises(es.DeviceError, match="link is down.*reconnect"):   # not silently restarted
        mnist.forward(x, device=device)
    device.reconnect()
    np.testing.assert_array_equal(mnist.forward(x, device=device), mnist.forward(x, device="cpu"))
    device.close()


def test_a_restarted_runner_is_used_again_with_reconnect_true(runner, mnist):
    device = RemoteDevice([runner], reconnect=True)
    x = random_input(mnist, 2, np.random.default_rng(12))
    expected = mnist.forward(x, device="cpu")
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)
    first = device._link.process.pid
    os.kill(first, signal.SIGKILL)
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)  # restarted, model loaded again
    assert device._link.process.pid != first
    device.close()


def test_a_slow_runner_times_out_within_the_timeout(runner, mnist):
    device = RemoteDevice([runner], timeout_s=0.5)
    x = random_input(mnist, 1, np.random.default_rng(13))
    mnist.forward(x, device=device)
    os.kill(device._link.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(es.DeviceError, match="no reply within the timeout"):
        mnist.forward(x, device=device)
    assert 0.4 < time.monotonic() - started < 2.0
    device.close()   # the stopped runner is killed, not waited for


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_spinning_is_bounded_on_both_sides_and_never_spins_when_idle(runner, mnist):
    """Both sides spin before they sleep (docs/protocol.md "Waiting"): the bounds are checked options,
    an idle runner sleeps (no CPU while no request comes), and a host waiting for a long run spins
    only its bound and then sleeps (its CPU time is a small part of the run's)."""
    refused = subprocess.run([str(runner), "--spin-us", "10001"], capture_output=True, timeout=10)
    assert refused.returncode == 2 and b"--spin-us must lie in [0, 10000]" in refused.stderr
    with pytest.raises(ValueError, match="spin_us must lie in"):
        RemoteDevice([runner], spin_us=-1)
    rng = np.random.default_rng(21)
    for runner_spin in ("0", "10000"):   # no spin; the longest the runner allows
        device = RemoteDevice([runner, "--spin-us", runner_spin])
        x = random_input(mnist, 1, rng)
        for _ in range(50):
            np.testing.assert_array_equal(mnist.forward(x, device=device), mnist.forward(x, device="cpu"))
        pid = device._link.process.pid
        time.sleep(0.05)   # past the spin bound after the last reply
        idle_from = cpu_seconds(pid)
        time.sleep(0.5)
        assert cpu_seconds(pid) - idle_from < 0.05, f"runner --spin-us {runner_spin} used CPU while idle"
        device.close()
    # a run of ~100 ms: the host spins 500 us, then sleeps until the RESULT arrives
    device = RemoteDevice([runner])
    train = random_input(mnist, 1, rng, timesteps=600, zero_fraction=0.5)
    expected = mnist.forward(train, device="cpu")
    started, host_from = time.monotonic(), time.process_time()
    np.testing.assert_array_equal(mnist.forward(train, device=device), expected)
    wall, host_cpu = time.monotonic() - started, time.process_time() - host_from
    assert host_cpu < 0.25 * wall, f"the host used {host_cpu * 1e3:.1f} ms of CPU in a {wall * 1e3:.1f} ms run"
    device.close()


def test_cpu_option_keeps_the_runner_on_that_cpu_and_refuses_one_it_cannot_have(runner, mnist):
    cpu = min(os.sched_getaffinity(0))
    device = RemoteDevice([runner, "--cpu", str(cpu)])
    x = random_input(mnist, 1, np.random.default_rng(23))
    np.testing.assert_array_equal(mnist.forward(x, device=device), mnist.forward(x, device="cpu"))
    assert os.sched_getaffinity(device.runner_pid) == {cpu}
    device.close()
    assert device.runner_pid is None
    for bad, why in (("1023", b"cannot run on CPU 1023 (--cpu)"), ("1024", b"--cpu must lie in [0, 1023]"),
                     ("x", b"--cpu x: not a CPU number")):
        refused = subprocess.run([str(runner), "--cpu", bad], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        assert refused.returncode in (1, 2) and why in refused.stderr, refused.stderr


def test_a_spinning_host_honours_a_timeout_shorter_than_its_spin(runner, mnist):
    device = RemoteDevice([runner], timeout_s=0.05, spin_us=1e6)   # spins up to 1 s, times out after 50 ms
    x = random_input(mnist, 1, np.random.default_rng(14))
    mnist.forward(x, device=device)
    os.kill(device._link.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(es.DeviceError, match="no reply within the timeout"):
        mnist.forward(x, device=device)
    assert 0.04 < time.monotonic() - started < 0.5
    device.close()


def test_a_link_polls_first_after_a_reply_that_was_late_and_reads_first_again_once_one_is_there():
    """FdLink's reads (transport.py): a reply that was not there at once makes the next waits poll
    before reading (a read that finds nothing costs an exception in Python); a reply found at the
    first look goes back to reading first. Either way the bytes arrive in order, and a wait that
    polls first still ends at its deadline."""
    from edgesnn_remote.transport import FdLink, LinkError

    read_fd, write_fd = os.pipe()
    link = FdLink(read_fd, write_fd, "a pipe", spin_s=0.0)
    buffer = bytearray(3)
    late = threading.Timer(0.05, os.write, (write_fd, b"abc"))
    late.start()
    assert link.recv_into([buffer], time.monotonic() + 2.0) == 3 and bytes(buffer) == b"abc"
    late.join()
    assert link._read_first is False                  # it had to wait: the next read polls first
    os.write(write_fd, b"xyz")
    assert link.recv_into([buffer], time.monotonic() + 2.0) == 3 and bytes(buffer) == b"xyz"
    assert link._read_first is True                   # that one was there at once: read first again
    os.write(write_fd, b"12345")
    assert link.recv_exact(5, time.monotonic() + 2.0) == b"12345"
    link._read_first = False
    started = time.monotonic()
    with pytest.raises(LinkError, match="no reply within the timeout"):
        link.recv_into([buffer], started + 0.05)
    assert 0.04 < time.monotonic() - started < 0.5
    link.close()


def test_the_runner_runs_the_fast_plan_and_takes_no_page_fault_per_run(runner, mnist):
    """The runner's engine runs what the library in process runs: the fast arena plan (LOADED's arena
    is the binding's fast-plan arena, not the lean one its fixed budget might suggest), and its one
    mapping is touched once: no page fault in 300 runs after the first (/proc/PID/stat minflt)."""
    from edgesnn import native

    device = RemoteDevice([runner])
    x = random_input(mnist, 1, np.random.default_rng(31))
    expected = mnist.forward(x, device="cpu")
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)
    plans = native.native_model(mnist).plan_arena_bytes
    assert plans["fast"] != plans["lean"]
    assert mnist.device_cache[device].loaded["arena_bytes"] == plans["fast"]

    def faults() -> int:
        fields = Path(f"/proc/{device.runner_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[7]) + int(fields[9])   # minor + major

    before = faults()
    for _ in range(300):
        mnist.forward(x, device=device)
    assert faults() - before == 0
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)
    device.close()


def test_a_spinning_runner_still_answers_a_truncated_frame_after_its_timeout(runner):
    link = RawLink(runner, "--timeout-ms", "100", "--spin-us", "10000")
    try:
        link.send(P.encode(P.LOAD, 1, b"y" * 1000)[:P.HEADER_BYTES + 10])
        started = time.monotonic()
        code, _ = link.error()
        assert code == "truncated" and 0.09 < time.monotonic() - started < 1.0
        hello_still_answers(link)
    finally:
        link.close()


class ManglingProxy:
    """A TCP proxy between the host and a real runner that can mangle the next reply."""

    def __init__(self, runner: Path):
        self.server = subprocess.Popen([str(runner), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        host, port = self.server.stdout.readline().decode().split()[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.mangle = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source, target, replies):
        buffer = b""
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if not replies:
                    target.sendall(data)
                    continue
                buffer += data
                while len(buffer) >= P.HEADER_BYTES:   # whole reply frames, mangled one at a time
                    length = struct.unpack_from("<I", buffer, 12)[0]
                    if len(buffer) < P.HEADER_BYTES + length:
                        break
                    frame, buffer = buffer[:P.HEADER_BYTES + length], buffer[P.HEADER_BYTES + length:]
                    mangle, self.mangle = self.mangle, None
                    out = frame if mangle is None else mangle(frame)
                    if out is None:          # drop the connection (finally: shut both down)
                        return
                    target.sendall(out)
        except OSError:
            pass
        finally:
            for s in (source, target):   # shutdown wakes the other pump's recv; close alone would not
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.listener.close()
        self.server.kill()
        self.server.wait()


def reencode(frame: bytes, **fields) -> bytes:
    magic, version, kind, sequence, length, crc, _ = P.HEADER.unpack_from(frame)
    version, sequence, length = fields.get("version", version), fields.get("sequence", sequence), fields.get("length", length)
    head = struct.pack("<IHHIII", magic, version, kind, sequence, length, crc)
    return head + struct.pack("<I", P.crc32(head)) + frame[P.HEADER_BYTES:]


def flip(offset):
    def mangle(frame):
        frame = bytearray(frame)
        frame[offset if offset >= 0 else len(frame) + offset] ^= 0x04
        return bytes(frame)
    return mangle


REPLY_FAULTS = {
    "corrupted payload": (flip(-3), "payload CRC-32 mismatch"),
    "corrupted header": (flip(9), "header CRC-32 mismatch"),
    "bad magic": (flip(0), "bad magic"),
    "truncated": (lambda frame: frame[:len(frame) // 2], "no reply within the timeout"),
    "oversized": (lambda frame: reencode(frame, length=1 << 31), "exceeds the limit"),
    "out of sequence": (lambda frame: reencode(frame, sequence=struct.unpack_from("<I", frame, 8)[0] + 1),
                        "out of step"),
    "wrong version": (lambda frame: reencode(frame, version=P.VERSION + 1), f"protocol version {P.VERSION + 1}"),
    "connection dropped": (lambda frame: None, "closed the link"),
}


@pytest.fixture(scope="module")
def proxy(runner):
    p = ManglingProxy(runner)
    yield p
    p.close()


@pytest.mark.parametrize("fault", list(REPLY_FAULTS))
def test_a_broken_reply_is_a_clear_device_error_within_the_timeout(proxy, mnist, fault):
    mangle, message = REPLY_FAULTS[fault]
    device = RemoteDevice(address=proxy.address, timeout_s=1.0)
    x = random_input(mnist, 1, np.random.default_rng(14))
    expected = mnist.forward(x, device="cpu")
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)
    proxy.mangle = mangle
    started = time.monotonic()
    with pytest.raises(es.DeviceError, match=message):
        mnist.forward(x, device=device)
    assert time.monotonic() - started < 2.0
    device.reconnect()        # a new connection through the proxy: served, and right
    np.testing.assert_array_equal(mnist.forward(x, device=device), expected)
    device.close()


def test_a_missing_runner_is_a_device_error():
    with pytest.raises(es.DeviceError, match="cannot start the runner"):
        RemoteDevice(["/nonexistent/edgesnn-runner"]).info()


def test_remote_is_registered_through_the_entry_point():
    es.plugins.reset()
    rows = {r.name: r for r in es.plugins.list_plugins()}
    assert rows["remote"].distribution == "edgesnn"
    assert "remote" in es.devices()
    assert es.plugins.get_device("remote") is RemoteDevice


# -- aarch64: the very binary a board runs, under qemu ---------------------------------------------------


@pytest.fixture(scope="module")
def aarch64_runner(tmp_path_factory) -> Path:
    return build_runner(tmp_path_factory.mktemp("runner-aarch64"), "aarch64-linux-musl")


def test_aarch64_runner_is_a_static_binary(aarch64_runner):
    header = elf_header(aarch64_runner)
    assert (header["bits"], header["machine"]) == (64, EM_AARCH64)
    assert PT_INTERP not in header["segment_types"]


def qemu_aarch64() -> str:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-aarch64 is not installed (scripts/install-system-deps.sh installs qemu-user)")
    return qemu


def test_aarch64_runner_under_qemu_is_bit_exact_and_reports_the_c_library_figures(aarch64_runner, mnist):
    with RemoteDevice([qemu_aarch64(), aarch64_runner], timeout_s=60) as device:
        info = device.info()
        assert info.architecture == "aarch64-linux-musl"
        rng = np.random.default_rng(15)
        for model in [mnist, *models().values()]:
            assert_bit_exact(model, device, rng, timesteps=(1, 3))
            program = device.program_of(model)
            # the aarch64 C library's own sizing (LOADED) is what check and the profiles answer on the host
            report = model.check("aarch64-linux")
            assert (program.loaded["program_bytes"], program.loaded["arena_bytes"]) == \
                (report.program_bytes, report.arena_bytes)
            assert device.check(model).arena_bytes == program.loaded["arena_bytes"]


# -- the runner's frame handling as a fuzz target ---------------------------------------------------------


@pytest.fixture(scope="module")
def runner_fuzz_library(tmp_path_factory) -> Path:
    """native/runner/fuzz.zig with the engine, ReleaseSafe, uninstrumented (native/fuzz/build.sh adds -ffuzz)."""
    out = tmp_path_factory.mktemp("runner-fuzz")
    zig = [sys.executable, "-m", "ziglang"]
    subprocess.run([*zig, "build-obj", "-OReleaseSafe", "-fPIC", "--dep", "engine", "-Mroot=runner/fuzz.zig",
                    "-Mengine=src/exports.zig", "--name", "runner_fuzz", f"-femit-bin={out / 'runner_fuzz.o'}"],
                   cwd=NATIVE, check=True, capture_output=True, timeout=900)
    subprocess.run([*zig, "cc", "-shared", str(out / "runner_fuzz.o"), "-o", str(out / "librunner_fuzz.so")],
                   check=True, capture_output=True, timeout=300)
    return out / "librunner_fuzz.so"


def test_the_frame_fuzz_target_survives_seeds_and_mutations(runner_fuzz_library, tmp_path):
    """The fuzz target's own oracle (every reply one well-formed frame; no safety-check panic) over the
    seed sessions, each with every single byte flipped in turn, in both input modes."""
    import ctypes

    library = ctypes.CDLL(str(runner_fuzz_library))
    fuzz_one = library.esnn_runner_fuzz_one
    fuzz_one.argtypes, fuzz_one.restype = [ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int
    subprocess.run([sys.executable, str(NATIVE / "fuzz" / "seeds.py"), str(tmp_path)], check=True,
                   capture_output=True, cwd=NATIVE / "fuzz")
    seeds = sorted((tmp_path / "frames").iterdir())
    assert seeds
    for seed in seeds:
        data = seed.read_bytes()
        assert fuzz_one(data, len(data)) == 8   # HELLO .. RUN_TRACE, RESET, RUN without a model: eight replies
        rng = np.random.default_rng(len(data))
        for offset in rng.choice(len(data), size=min(len(data), 300), replace=False):
            mutated = bytearray(data)
            mutated[offset] ^= 1 << int(rng.integers(8))
            assert fuzz_one(bytes(mutated), len(mutated)) >= 0
    kept = ROOT / "tests" / "data" / "fuzz" / "frames"
    for path in sorted(kept.glob("*")) if kept.is_dir() else []:
        assert fuzz_one(path.read_bytes(), path.stat().st_size) >= 0, path.name


def test_smoke_fuzz_frames(runner_fuzz_library, tmp_path):
    """A few seconds of native/fuzz/fuzz_frames.py under atheris (uninstrumented: the harness end to end)."""
    pytest.importorskip("atheris")
    subprocess.run([sys.executable, str(NATIVE / "fuzz" / "seeds.py"), str(tmp_path / "seeds")], check=True,
                   capture_output=True, cwd=NATIVE / "fuzz")
    env = {**os.environ, "EDGESNN_RUNNER_FUZZ_LIB": str(runner_fuzz_library)}
    result = subprocess.run([sys.executable, str(NATIVE / "fuzz" / "fuzz_frames.py"), str(tmp_path / "seeds" / "frames"),
                             "-max_total_time=5", f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True,
                            timeout=120, env=env, cwd=NATIVE / "fuzz")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Done " in result.stderr, result.stderr[-2000:]


def markdown_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_docs_protocol_md_says_what_the_host_and_the_runner_do():
    """docs/protocol.md, the page a vendor implements firmware from, against both implementations: the
    header layout, every type and error code (plugins/edgesnn_remote/protocol.py and
    native/runner/protocol.zig), the version, and the fixed payload sizes (protocol.py's structs and
    session.zig's constants)."""
    import re

    doc = (ROOT / "docs" / "protocol.md").read_text()
    zig = (NATIVE / "runner" / "protocol.zig").read_text()
    session = (NATIVE / "runner" / "session.zig").read_text()
    header = [(int(offset), int(size) if size.isdigit() else size, field) for offset, size, field, *_ in
              markdown_rows(doc, "| offset | size | field | value |")]
    assert [field for *_, field in header] == ["magic", "version", "type", "sequence", "length", "payload_crc",
                                               "header_crc", "payload"]
    sizes = [struct.calcsize(code) for code in P.HEADER.format.lstrip("<")]
    assert [(offset, size) for offset, size, _ in header[:-1]] == \
        [(sum(sizes[:i]), size) for i, size in enumerate(sizes)] and header[-1][:2] == (P.HEADER_BYTES, "length")
    types = {int(code, 16): name for code, name, *_ in markdown_rows(doc, "| type | name |")}
    assert types == P.TYPE_NAMES
    zig_types = {int(code, 16) for code in re.findall(r"= (0x[0-9A-F]{2}),", zig[zig.index("pub const Type"):])}
    assert zig_types == set(types)
    codes = {int(code): name for code, name, *_ in markdown_rows(doc, "| code | name |")}
    assert codes == P.ERROR_CODES
    zig_codes = dict((int(code), name) for name, code in re.findall(r"(\w+) = (\d+),", zig[zig.index("pub const ErrorCode"):zig.index("pub const Header")]))
    assert zig_codes == codes
    assert f"(version {P.VERSION})" in doc.splitlines()[0] and f"protocol_version: u16 = {P.VERSION};" in zig
    assert f"| 4 | 2 | version | {P.VERSION} |" in doc
    fixed = {"INFO": (P.INFO_FIXED.size + 64, "info_bytes"), "LOADED": (P.LOADED_REPLY.size, "loaded_bytes"),
             "STATS": (8 * len(P.STATS_REPLY_FIELDS), "stats_bytes")}
    for name, (size, constant) in fixed.items():
        assert re.search(rf"^### \w+ → {name} \({size} bytes\)$", doc, re.M), name
        assert f"pub const {constant} = {size};" in session, constant
    run_request = markdown_rows(doc[doc.index("### RUN → RESULT"):], "| offset | size | field |")[:4]
    assert [int(size) for _, size, _ in run_request] == [4] * 4 and P.RUN_REQUEST.size == 16


def test_the_runner_protocol_zig_tests_pass():
    """native/runner/protocol.zig's own test: a written header parses back, any flipped bit is refused."""
    result = subprocess.run([sys.executable, "-m", "ziglang", "test", "runner/protocol.zig"], cwd=NATIVE,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
