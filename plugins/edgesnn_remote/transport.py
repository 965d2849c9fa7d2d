"""Byte links to a device runner, each with deadlines: a subprocess's stdio, TCP, a serial line.

Every wait has a deadline; a link that times out, closes or fails raises LinkError and is not used
again (the device reconnects when asked). No link ever blocks past its deadline.

Waiting for a reply first spins: the link polls without sleeping for up to `spin_s` (the remote
device's `spin_us`, default 500 us: more than a batch-1 run of the shipped models takes) and only
then sleeps in poll until the deadline. Asleep, the host's CPU goes idle (on a VM the vCPU halts)
and must be woken, and each switch between host and runner leaves caches and TLB cold; spinning,
host and runner stay each on its own core. A spin that ends without a reply (a long run, or the
runner waiting for the very CPU the host spins on) raises a count (at most 8) that a caught reply
lowers by one, and makes the link sleep at once through the next 2^count - 1 waits (1, 3, 7 ... up
to 255), so a host whose spins do not pay off soon sleeps as before.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import tempfile
import time
import tty
import weakref

CHUNK_BYTES = 1 << 16
_clock = time.monotonic


class LinkError(Exception):
    """The link timed out, closed or failed; the message says which and where."""


class FdLink:
    """A link over a pair of file descriptors, read with poll and a deadline.

    Reads never block. A read is tried before any poll while replies keep being there at once (the
    runner often answers before the host's write returns when the two share a core); once a reply
    was not there, the next waits poll first (a read that finds nothing costs a syscall and, in
    Python, an exception: ~3-4x a poll(0)), until a wait finds its reply there at the first look.
    Poll waits with the deadline. A frame goes out in one writev (header, fixed part and input as
    they are: nothing is joined or copied).
    """

    def __init__(self, read_fd: int, write_fd: int, description: str, spin_s: float = 0.0):
        self.read_fd, self.write_fd, self.description = read_fd, write_fd, description
        self.spin_s = float(spin_s)       # seconds a wait polls without sleeping first (0: never)
        self._spin_misses = self._spin_skip = 0
        os.set_blocking(read_fd, False)
        self._poll = select.poll()
        self._poll.register(read_fd, select.POLLIN)
        self._buffer = bytearray()   # bytes read past what was asked for, served first
        self._read_first = True      # the last reply was there at once: read before polling
        self.closed = False

    def send(self, data, deadline: float) -> None:
        self.send_parts((data,), len(data), deadline)

    def send_parts(self, parts, total: int, deadline: float) -> None:
        """Write the buffers `parts` (`total` bytes in all) in order, by the deadline."""
        written = self._written(os.writev, parts)
        if written == total:
            return
        # the link took part of it (a large frame, a full pipe): the rest in a loop, waiting for room
        rest = memoryview(b"".join(memoryview(part).cast("B") for part in parts))[written:]
        waiter = None
        while rest:
            written = self._written(os.write, rest)
            rest = rest[written:]
            if rest and not written:
                if waiter is None:
                    waiter = select.poll()
                    waiter.register(self.write_fd, select.POLLOUT)
                remaining_ms = (deadline - time.monotonic()) * 1000.0
                if remaining_ms <= 0 or not waiter.poll(max(1, int(remaining_ms + 0.999))):
                    raise LinkError(f"{self.description}: could not send within the timeout "
                                    f"({total - len(rest):,} of {total:,} bytes sent)")

    def _written(self, write, data) -> int:
        """Bytes that `write(fd, data)` (os.write or os.writev) took: 0 when the link is full."""
        try:
            return write(self.write_fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise LinkError(f"{self.description}: write failed ({exc.strerror or exc}): {self.why_closed()}") from None

    def recv_into(self, buffers, deadline: float, have: int = 0, count: int = 0) -> int:
        """Read at least one byte into the writable buffers `buffers` (filled in order; one readv), bytes
        already pending first; returns the number read. `have` / `count`: how much of what the caller
        waits for has arrived, for the timeout's message."""
        pending = self._buffer
        if pending:
            view = memoryview(buffers[0]).cast("B")
            taken = min(len(pending), len(view))
            view[:taken] = pending[:taken]
            del pending[:taken]
            return taken
        if not self._read_first:
            self._read_first = self._wait(deadline, have, count)
        while True:
            try:
                taken = os.readv(self.read_fd, buffers)
            except BlockingIOError:   # nothing yet: wait for it, up to the deadline
                self._read_first = False
                self._wait(deadline, have, count)
                continue
            except OSError as exc:
                raise LinkError(f"{self.description}: read failed ({exc.strerror or exc}): {self.why_closed()}") from None
            if not taken:
                raise LinkError(f"{self.description}: the runner closed the link: {self.why_closed()}")
            return taken

    def unread(self, data) -> None:
        """Give back bytes read past a frame: the next reads take them first."""
        self._buffer[:0] = data

    def _wait(self, deadline: float, have: int, count: int) -> bool:
        """Wait until the link is readable (spinning first, see the module's doc), or raise at the
        deadline; True when it was readable at the first look (the reply was there at once)."""
        if self._poll.poll(0):
            return True
        if self.spin_s and self._spun(deadline):
            return False
        remaining_ms = (deadline - time.monotonic()) * 1000.0
        if remaining_ms <= 0 or not self._poll.poll(max(1, int(remaining_ms + 0.999))):
            raise LinkError(f"{self.description}: no reply within the timeout ({have} of {count} bytes arrived)")
        return False

    def _spun(self, deadline: float) -> bool:
        """Poll without sleeping for up to spin_s (not past the deadline): True once readable."""
        if self._spin_skip:
            self._spin_skip -= 1
            return False
        poll, clock = self._poll.poll, _clock
        until = min(clock() + self.spin_s, deadline)
        while True:
            if poll(0):
                self._spin_misses = max(self._spin_misses - 1, 0)
                return True
            if clock() >= until:
                break
        misses = self._spin_misses = min(self._spin_misses + 1, 8)
        self._spin_skip = (1 << misses) - 1
        return False

    def recv_exact(self, count: int, deadline: float) -> bytes:
        buffer = self._buffer
        if len(buffer) < count and not self._read_first:
            self._read_first = self._wait(deadline, len(buffer), count)
        while len(buffer) < count:
            try:
                chunk = os.read(self.read_fd, CHUNK_BYTES)
            except BlockingIOError:   # nothing yet: wait for it, up to the deadline
                self._read_first = False
                self._wait(deadline, len(buffer), count)
                continue
            except OSError as exc:
                raise LinkError(f"{self.description}: read failed ({exc.strerror or exc}): {self.why_closed()}") from None
            if not chunk:
                raise LinkError(f"{self.description}: the runner closed the link: {self.why_closed()}")
            buffer += chunk
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    def discard_pending(self) -> None:
        self._buffer.clear()

    def why_closed(self) -> str:
        return "connection lost"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


class ProcessLink(FdLink):
    """The runner as a child process, the link on its stdin / stdout; its stderr kept for messages."""

    def __init__(self, command: list[str]):
        self.command = [str(part) for part in command]
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=self._stderr, bufsize=0)
        except OSError as exc:
            raise LinkError(f"cannot start the runner {self.command[0]!r}: {exc.strerror or exc}") from None
        # a runner serving TCP never sees its stdin close: end it when this link goes or Python exits
        weakref.finalize(self, _end_process, self.process)
        super().__init__(self.process.stdout.fileno(), self.process.stdin.fileno(),
                         f"runner {os.path.basename(self.command[0])} (pid {self.process.pid}, stdio)")
        os.set_blocking(self.write_fd, False)   # a runner that stops reading cannot block a send past its deadline

    def why_closed(self) -> str:
        try:
            status = self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return "the process is still running"
        self._stderr.seek(0)
        tail = self._stderr.read()[-400:].decode("utf-8", "replace").strip()
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        return f"the process ended ({how})" + (f"; stderr: {tail}" if tail else "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._stderr.close()


def _end_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class TcpLink(FdLink):
    """A TCP connection to a runner started with --listen IP:PORT."""

    def __init__(self, host: str, port: int, timeout_s: float):
        try:
            self.socket = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise LinkError(f"cannot connect to the runner at {host}:{port}: {exc.strerror or exc}") from None
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        fd = self.socket.fileno()
        super().__init__(fd, fd, f"runner at {host}:{port} (tcp)")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.socket.close()


class SerialLink(FdLink):
    """A serial line (or a pty) to a runner started with --device PATH; set raw, no echo."""

    def __init__(self, path: str | int):
        """`path`: the device path, or an open file descriptor (e.g. a pty's master; it is duplicated)."""
        try:
            fd = os.dup(path) if isinstance(path, int) else os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise LinkError(f"cannot open the serial line {path}: {exc.strerror or exc}") from None
        path = path if not isinstance(path, int) else f"fd {path}"
        try:
            tty.setraw(fd)
        except OSError:
            pass  # not a tty (a FIFO, say): bytes pass as they are
        super().__init__(fd, fd, f"runner on {path} (serial)")


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)
