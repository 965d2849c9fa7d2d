//! edgesnn-runner: the native engine as a small standalone program a board runs, driven by a host
//! over a framed link (docs/protocol.md).
//!
//!   edgesnn-runner [--memory BYTES] [--frame-bytes BYTES] [--timeout-ms MS] [--timesteps-max N]
//!                  [--spin-us US] [--cpu N] [--listen IP:PORT | --device PATH]
//!
//! Serves the link on stdin/stdout by default; `--listen 127.0.0.1:0` accepts TCP connections one
//! after another (a host reconnects by connecting again) and prints `listening IP:PORT` on stdout;
//! `--device PATH` opens a serial line (or a pty) and sets it raw. Linux only (raw syscalls).
//! `--cpu N` keeps the runner on CPU N (sched_setaffinity), e.g. a core a board reserves for it;
//! by default it runs wherever the OS schedules it.
//!
//! Memory: one mapping made at start holds everything: two frames of --frame-bytes (default 1 MiB)
//! and the memory budget --memory (default 16 MiB) for the loaded model and its arena. Nothing is
//! allocated after start; a model whose program + arena exceed the budget is refused with the reason.
//!
//! Waiting: a read that finds no bytes first polls the link without sleeping for up to --spin-us
//! microseconds (default 100, at most 10000; 0: never), then sleeps in poll/read (a frame timeout
//! counts from there). A host's next request usually comes some microseconds after a reply: caught
//! by the spin, the runner's CPU never goes idle and the runner need not be woken up (on a VM an
//! idle vCPU halts; its wake-up and the process switches cost more than the spin). Idle, the runner
//! spins once after a reply and then sleeps; spins that keep missing are skipped (FdLink.spun).

const std = @import("std");
const linux = std.os.linux;
const session_zig = @import("session.zig");

const Session = session_zig.Session;
const Read = session_zig.Read;

const memory_bytes_default = 16 << 20;
const payload_bytes_default = 1 << 20;
const payload_bytes_max = 1 << 30;

const Mode = union(enum) { stdio, listen: struct { addr: u32, port: u16 }, device: [*:0]const u8 };

const Config = struct {
    memory_bytes: usize = memory_bytes_default,
    payload_bytes: u32 = payload_bytes_default,
    timeout_ms: i32 = 1000,
    timesteps_max: u32 = session_zig.timesteps_max,
    spin_ns: u64 = spin_us_default * std.time.ns_per_us,
    cpu: ?u16 = null,
    mode: Mode = .stdio,
};

const spin_us_default = 100;
const spin_us_max = 10_000;

/// Bytes a link reads ahead: one read takes a whole small frame (header and payload) that arrived
/// together, instead of a read for its first byte, one for the rest of the header and one for the payload.
const read_ahead_bytes = 64 * 1024;
var read_ahead: [read_ahead_bytes]u8 = undefined; // the one link's; allocated with the program

/// A link over file descriptors (a pipe pair, a socket or a tty), reading ahead into `read_ahead`.
const FdLink = struct {
    in: i32,
    out: i32,
    socket: bool,
    spin_ns: u64,
    spin_misses: u8 = 0, // +1 per spin that ended with nothing, -1 per spin that caught a frame
    spin_skip: u32 = 0, // reads left that sleep without spinning first
    ahead: []u8 = read_ahead[0..],
    ahead_start: usize = 0, // bytes [ahead_start, ahead_end) arrived and are not consumed yet
    ahead_end: usize = 0,

    pub fn read(link: *FdLink, buffer: []u8, timeout_ms: i32) Read {
        var done: usize = 0;
        while (done < buffer.len) {
            if (link.ahead_start < link.ahead_end) {
                const count = @min(link.ahead_end - link.ahead_start, buffer.len - done);
                @memcpy(buffer[done..][0..count], link.ahead[link.ahead_start..][0..count]);
                link.ahead_start += count;
                done += count;
                continue;
            }
            if (!link.spun() and timeout_ms >= 0) {
                switch (waitReadable(link.in, timeout_ms)) {
                    .ok => {},
                    else => |other| return other,
                }
            }
            // what is left of a large payload goes straight to its place; anything else reads ahead
            const direct = buffer.len - done >= link.ahead.len;
            const target = if (direct) buffer[done..] else link.ahead;
            const rc = linux.read(link.in, target.ptr, target.len);
            switch (linux.errno(rc)) {
                .SUCCESS => {},
                .INTR, .AGAIN => continue,
                else => return .failed,
            }
            if (rc == 0) return .eof;
            if (direct) {
                done += rc;
            } else {
                link.ahead_start = 0;
                link.ahead_end = rc;
            }
        }
        return .ok;
    }

    /// Spin for input (spinReadable) unless recent spins missed: a miss raises a count (at most 8)
    /// and a caught frame lowers it by one, and after a miss the next 2^count - 1 reads (1, 3, 7 ...
    /// up to 255) sleep at once: a host that sends seldom, or that waits for the very CPU this spins
    /// on, is soon neither kept waiting nor spun for.
    /// A spin during which the runner was preempted counts as a miss even if it caught the frame:
    /// another task wanted this CPU (perhaps the host itself, woken by the reply), so spinning here
    /// takes its time away; asleep the runner would have given the CPU up at once.
    fn spun(link: *FdLink) bool {
        if (link.spin_ns == 0) return false;
        if (link.spin_skip > 0) {
            link.spin_skip -= 1;
            return false;
        }
        const before = preemptions();
        const ready = spinReadable(link.in, link.spin_ns, before);
        if (ready and preemptions() == before) {
            link.spin_misses -|= 1;
            return true;
        }
        link.spin_misses = @min(link.spin_misses + 1, 8);
        link.spin_skip = (@as(u32, 1) << @intCast(link.spin_misses)) - 1;
        return ready;
    }

    pub fn drain(link: *FdLink, quiet_ms: i32) Read {
        link.ahead_start = link.ahead_end; // what was read ahead goes with the rest
        var scratch: [4096]u8 = undefined;
        while (true) {
            switch (waitReadable(link.in, quiet_ms)) {
                .ok => {},
                .timeout => return .ok,
                else => |other| return other,
            }
            const rc = linux.read(link.in, &scratch, scratch.len);
            switch (linux.errno(rc)) {
                .SUCCESS => {},
                .INTR, .AGAIN => continue,
                else => return .failed,
            }
            if (rc == 0) return .eof;
        }
    }

    pub fn write(link: *FdLink, bytes: []const u8) bool {
        var done: usize = 0;
        while (done < bytes.len) {
            const rc = if (link.socket)
                linux.sendto(link.out, bytes[done..].ptr, bytes.len - done, linux.MSG.NOSIGNAL, null, 0)
            else
                linux.write(link.out, bytes[done..].ptr, bytes.len - done);
            switch (linux.errno(rc)) {
                .SUCCESS => done += rc,
                .INTR, .AGAIN => continue,
                else => return false,
            }
        }
        return true;
    }
};

/// Poll `fd` without sleeping for up to `spin_ns`, or until this thread is preempted (its count of
/// involuntary switches moves from `preempted`): true once it is readable (or hung up / in error: the
/// read that follows tells which), false when the spin ended with nothing (the caller then sleeps).
fn spinReadable(fd: i32, spin_ns: u64, preempted: isize) bool {
    var fds = [_]linux.pollfd{.{ .fd = fd, .events = linux.POLL.IN, .revents = 0 }};
    const until = monotonicNs() + spin_ns;
    var round: u32 = 0;
    while (true) : (round +%= 1) {
        const rc = linux.poll(&fds, 1, 0);
        if (linux.errno(rc) == .SUCCESS and rc > 0) return true;
        if (monotonicNs() >= until) return false;
        if (round % 8 == 7 and preemptions() != preempted) return false;
    }
}

/// Involuntary context switches of this thread so far (getrusage): a change means it was preempted.
fn preemptions() isize {
    var counts: linux.rusage = undefined;
    if (linux.errno(linux.getrusage(linux.rusage.THREAD, &counts)) != .SUCCESS) return 0;
    return counts.nivcsw;
}

fn waitReadable(fd: i32, timeout_ms: i32) Read {
    var fds = [_]linux.pollfd{.{ .fd = fd, .events = linux.POLL.IN }};
    while (true) {
        const rc = linux.poll(&fds, 1, timeout_ms);
        switch (linux.errno(rc)) {
            .SUCCESS => {},
            .INTR => continue,
            else => return .failed,
        }
        if (rc == 0) return .timeout;
        return .ok; // readable, or hung up / in error: the read that follows tells which
    }
}

fn monotonicNs() u64 {
    var now: linux.timespec = undefined;
    if (linux.errno(linux.clock_gettime(.MONOTONIC, &now)) != .SUCCESS) return 0;
    return @as(u64, @intCast(now.sec)) * std.time.ns_per_s + @as(u64, @intCast(now.nsec));
}

fn say(comptime format: []const u8, args: anytype) void {
    var buffer: [512]u8 = undefined;
    const text = std.fmt.bufPrint(&buffer, format, args) catch return;
    _ = linux.write(2, text.ptr, text.len);
}

fn sayOut(comptime format: []const u8, args: anytype) void {
    var buffer: [128]u8 = undefined;
    const text = std.fmt.bufPrint(&buffer, format, args) catch return;
    _ = linux.write(1, text.ptr, text.len);
}

fn usage(comptime why: []const u8, args: anytype) u8 {
    say("edgesnn-runner: " ++ why ++ "\nusage: edgesnn-runner [--memory BYTES] [--frame-bytes BYTES] [--timeout-ms MS] [--timesteps-max N] [--spin-us US] [--cpu N] [--listen IP:PORT | --device PATH]\n", args);
    return 2;
}

fn parseAddress(text: []const u8) ?struct { addr: u32, port: u16 } {
    const colon = std.mem.findScalarLast(u8, text, ':') orelse return null;
    const port = std.fmt.parseInt(u16, text[colon + 1 ..], 10) catch return null;
    var octets: [4]u8 = undefined;
    var count: usize = 0;
    var parts = std.mem.splitScalar(u8, text[0..colon], '.');
    while (parts.next()) |part| : (count += 1) {
        if (count == 4) return null;
        octets[count] = std.fmt.parseInt(u8, part, 10) catch return null;
    }
    if (count != 4) return null;
    return .{ .addr = @bitCast(octets), .port = port }; // network order: the octets as they are written
}

fn parseArgs(args: []const [*:0]const u8, config: *Config) ?u8 {
    var index: usize = 1;
    while (index < args.len) : (index += 2) {
        const flag = std.mem.span(args[index]);
        if (index + 1 >= args.len) return usage("{s} needs a value", .{flag});
        const value = std.mem.span(args[index + 1]);
        if (std.mem.eql(u8, flag, "--memory")) {
            config.memory_bytes = std.fmt.parseInt(usize, value, 10) catch return usage("--memory {s}: not a byte count", .{value});
        } else if (std.mem.eql(u8, flag, "--frame-bytes")) {
            config.payload_bytes = std.fmt.parseInt(u32, value, 10) catch return usage("--frame-bytes {s}: not a byte count", .{value});
            if (config.payload_bytes < 1024 or config.payload_bytes > payload_bytes_max) return usage("--frame-bytes must lie in [1024, {d}]", .{payload_bytes_max});
        } else if (std.mem.eql(u8, flag, "--timeout-ms")) {
            config.timeout_ms = std.fmt.parseInt(i32, value, 10) catch return usage("--timeout-ms {s}: not a number", .{value});
            if (config.timeout_ms < 1) return usage("--timeout-ms must be at least 1", .{});
        } else if (std.mem.eql(u8, flag, "--timesteps-max")) {
            config.timesteps_max = std.fmt.parseInt(u32, value, 10) catch return usage("--timesteps-max {s}: not a number", .{value});
            if (config.timesteps_max < 1 or config.timesteps_max > session_zig.timesteps_max) return usage("--timesteps-max must lie in [1, {d}]", .{session_zig.timesteps_max});
        } else if (std.mem.eql(u8, flag, "--spin-us")) {
            const spin_us = std.fmt.parseInt(u64, value, 10) catch return usage("--spin-us {s}: not a number", .{value});
            if (spin_us > spin_us_max) return usage("--spin-us must lie in [0, {d}]", .{spin_us_max});
            config.spin_ns = spin_us * std.time.ns_per_us;
        } else if (std.mem.eql(u8, flag, "--cpu")) {
            const cpu = std.fmt.parseInt(u16, value, 10) catch return usage("--cpu {s}: not a CPU number", .{value});
            if (cpu >= linux.CPU_SETSIZE * 8) return usage("--cpu must lie in [0, {d}]", .{linux.CPU_SETSIZE * 8 - 1});
            config.cpu = cpu;
        } else if (std.mem.eql(u8, flag, "--listen")) {
            const address = parseAddress(value) orelse return usage("--listen {s}: expected an IPv4 address and port, e.g. 127.0.0.1:0", .{value});
            config.mode = .{ .listen = .{ .addr = address.addr, .port = address.port } };
        } else if (std.mem.eql(u8, flag, "--device")) {
            config.mode = .{ .device = args[index + 1] };
        } else {
            return usage("unknown option {s}", .{flag});
        }
    }
    return null;
}

pub fn main(init: std.process.Init.Minimal) u8 {
    var config: Config = .{};
    if (parseArgs(init.args.vector, &config)) |status| return status;

    if (config.cpu) |cpu| {
        var set = std.mem.zeroes(linux.cpu_set_t);
        set[cpu / @bitSizeOf(usize)] |= @as(usize, 1) << @intCast(cpu % @bitSizeOf(usize));
        linux.sched_setaffinity(0, &set) catch {
            say("edgesnn-runner: cannot run on CPU {d} (--cpu): no such CPU, or not allowed to this process\n", .{cpu});
            return 1;
        };
    }
    const total = Session.memoryBytes(config.payload_bytes, config.memory_bytes);
    const mapped = linux.mmap(null, total, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0);
    if (linux.errno(mapped) != .SUCCESS) {
        say("edgesnn-runner: cannot map {d} bytes of memory (--memory {d}, --frame-bytes {d})\n", .{ total, config.memory_bytes, config.payload_bytes });
        return 1;
    }
    const memory: []align(8) u8 = @as([*]align(8) u8, @ptrFromInt(mapped))[0..total];
    var session = Session.init(memory, config.payload_bytes, .{ .frame_timeout_ms = config.timeout_ms, .timesteps_max = config.timesteps_max }, &monotonicNs);
    say("edgesnn-runner: {s}, memory budget {d} B, frames up to {d} B\n", .{ session_zig.architecture, config.memory_bytes, config.payload_bytes });

    switch (config.mode) {
        .stdio => {
            var link: FdLink = .{ .in = 0, .out = 1, .socket = false, .spin_ns = config.spin_ns };
            session_zig.serve(FdLink, &link, &session);
            return 0;
        },
        .device => |path| return serveDevice(path, &session, config.spin_ns),
        .listen => |address| return serveTcp(address.addr, address.port, &session, config.spin_ns),
    }
}

fn serveDevice(path: [*:0]const u8, session: *Session, spin_ns: u64) u8 {
    const rc = linux.openat(linux.AT.FDCWD, path, .{ .ACCMODE = .RDWR, .NOCTTY = true, .CLOEXEC = true }, 0);
    if (linux.errno(rc) != .SUCCESS) {
        say("edgesnn-runner: cannot open {s}: {t}\n", .{ std.mem.span(path), linux.errno(rc) });
        return 1;
    }
    const fd: i32 = @intCast(rc);
    var tty: linux.termios = undefined;
    if (linux.errno(linux.tcgetattr(fd, &tty)) == .SUCCESS) { // a tty: raw bytes, no echo, no line editing
        tty.iflag = @bitCast(@as(u32, 0));
        tty.oflag = @bitCast(@as(u32, 0));
        tty.lflag = @bitCast(@as(u32, 0));
        tty.cc[@intFromEnum(linux.V.MIN)] = 1;
        tty.cc[@intFromEnum(linux.V.TIME)] = 0;
        _ = linux.tcsetattr(fd, .NOW, &tty);
    }
    var link: FdLink = .{ .in = fd, .out = fd, .socket = false, .spin_ns = spin_ns };
    session_zig.serve(FdLink, &link, session);
    return 0;
}

fn serveTcp(addr: u32, port: u16, session: *Session, spin_ns: u64) u8 {
    const rc = linux.socket(linux.AF.INET, linux.SOCK.STREAM | linux.SOCK.CLOEXEC, 0);
    if (linux.errno(rc) != .SUCCESS) {
        say("edgesnn-runner: socket: {t}\n", .{linux.errno(rc)});
        return 1;
    }
    const server: i32 = @intCast(rc);
    const one: c_int = 1;
    _ = linux.setsockopt(server, linux.SOL.SOCKET, linux.SO.REUSEADDR, std.mem.asBytes(&one), @sizeOf(c_int));
    var address: linux.sockaddr.in = .{ .port = std.mem.nativeToBig(u16, port), .addr = addr };
    if (linux.errno(linux.bind(server, @ptrCast(&address), @sizeOf(linux.sockaddr.in))) != .SUCCESS or
        linux.errno(linux.listen(server, 1)) != .SUCCESS)
    {
        say("edgesnn-runner: cannot listen on port {d}\n", .{port});
        return 1;
    }
    var length: linux.socklen_t = @sizeOf(linux.sockaddr.in);
    _ = linux.getsockname(server, @ptrCast(&address), &length);
    const octets: [4]u8 = @bitCast(address.addr);
    sayOut("listening {d}.{d}.{d}.{d}:{d}\n", .{ octets[0], octets[1], octets[2], octets[3], std.mem.bigToNative(u16, address.port) });
    while (true) { // one connection at a time; a host reconnects by connecting again
        const accepted = linux.accept(server, null, null);
        switch (linux.errno(accepted)) {
            .SUCCESS => {},
            .INTR, .AGAIN, .CONNABORTED => continue,
            else => return 1,
        }
        const fd: i32 = @intCast(accepted);
        _ = linux.setsockopt(fd, linux.IPPROTO.TCP, linux.TCP.NODELAY, std.mem.asBytes(&one), @sizeOf(c_int));
        var link: FdLink = .{ .in = fd, .out = fd, .socket = true, .spin_ns = spin_ns };
        session.expected_sequence = null; // a new connection numbers its frames afresh
        session_zig.serve(FdLink, &link, session);
        _ = linux.close(fd);
    }
}

test {
    _ = @import("protocol.zig");
}
