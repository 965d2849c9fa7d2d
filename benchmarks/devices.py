"""Runs per second over the device-runner link, beside the in-process cpu device, in one run.

    python benchmarks/devices.py             # MNIST, KWS and echo models, stdio and TCP, native and qemu
    python benchmarks/devices.py --quick     # fewer calls
    python benchmarks/devices.py --with-no-spin   # also the link with spinning off on both sides
    python benchmarks/devices.py --pin       # host (and in-process cpu) on CPU 0, runners on CPU 1 (--cpu 1)
    python benchmarks/devices.py --json out.json --markdown out.md
    python benchmarks/devices.py --build-runner   # build the host's runner now (default: the installed one)
    python benchmarks/devices.py --budget-s 30    # seconds of rounds per model at most (default; >= 20 rounds)

Models: the shipped MNIST CNN (edgesnn/data/mnist_cnn_4bit.esnn, real digits as input) and a
KWS-shaped DS-CNN (49x10x1 MFCC -> conv 10x4/2 (64) -> 4 separable 3x3 blocks -> global average ->
dense 12, 4-bit, random weights, sparse random input), and "echo" (one 4-value dense layer, the
engine's work ~0: the link alone). Devices: `cpu` (the engine in this process), `remote` over stdio
and over TCP to the runner built for this machine, and `remote` over stdio to the
aarch64-linux-musl runner under qemu-aarch64 (emulated: a correctness path, not a speed one).
The links wait as the plugin does by default (the host spins 500 us for a reply, the runner 100 us
for a request, then each sleeps: docs/protocol.md "Waiting"); --spin-us / --runner-spin-us change
that, --with-no-spin adds the same links with spinning off, interleaved in the same rounds.

The comparison is interleaved in one run: the devices take turns in short blocks of calls (an
untimed warm-up of 2 ms, at least one call, then 10 timed ones), round after round, so a change of
machine load falls on every device alike; each device's latency is the median over all its timed
calls. After each timed block comes a block of paired calls, each timed alone with its engine time:
for a remote device the runner's own (a STATS request after each forward, outside its timing:
run_ns_total against the one before), for cpu the bare native call in this process (esnn_run_batch
through ctypes, on a context of its own). Per-call pairs, not block sums: on a loaded machine most
blocks hold a call preempted for milliseconds, which a pair's difference cancels or a median drops.

Per model and transport: batch-1 latency, runs/s, the engine's time per call, and **wall - engine**:
for a remote device the median over the paired calls of each call's latency minus its own engine
time, the link's overhead (the host's Python of model.forward and of the
remote path, framing, CRCs, the pipe or socket, the process switches; the verdict's figure), for
cpu the in-process Python around the engine; then the in-process cpu latency, remote - cpu (what a
user pays over in process), and the runner's engine minus the in-process one. Both sides run the
same kernels (the same build flags; the arena plan each side ran is printed: the runner loads with
the fast plan, as the Python binding does) and on this VM one vCPU can run the same engine ~1.5x
slower than the other for minutes (measured: 170 against 112 us for MNIST, in process and in the
runner alike, swapping CPUs between runs), so remote - cpu moves with which vCPU the runner got;
the script prints the engine on each CPU in turn, in process and in a runner kept there with --cpu
(this process on the other CPU), to show it. A second table says
where host and runner ran: per timed call, the context switches of this process and of the runner,
the time each waited on a run queue (/proc/PID/schedstat and status, read around each timed block)
and the CPU each was last on after its blocks: ~0 switches per call when each spins on a core of
its own, ~1 each when the scheduler queues them on one core and every call hands that core over
and back (the runner's engine then evicts the host's caches, and each switch flushes the TLB on a
VM without PCID). Target: the link's overhead (remote wall - the runner's engine time) < 50 us at
batch 1 on loopback; the script ends with a verdict line per model and transport. The machine,
CPU and load average (before and after) are printed with the table: the machine may be shared,
and every figure moves with its load.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgesnn as es
from edgesnn import layers as L

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
TARGET_US = 50.0
WARM_UP_S = 0.002
QEMU_STRIDE = 20   # the emulated runner takes part in every 20th round (~0.1 s a call: correctness, not speed)


def kws_model(seed: int = 0) -> es.Model:
    rng = np.random.default_rng(seed)
    w = lambda low, high, shape: rng.integers(low, high + 1, shape)  # noqa: E731
    layers = [L.InputConv2D(name="conv", weights=w(-8, 7, (10, 4, 1, 64)), weight_bits=4, stride=2,
                            bias=w(-50, 50, 64), out_multiplier=np.ones(64, int), out_shift=9, activation_bits=4)]
    for block in range(4):
        layers.append(L.Separable2D(name=f"sep{block}", weights=w(-8, 7, (3, 3, 64)), pointwise=w(-8, 7, (64, 64)),
                                    weight_bits=4, mid_multiplier=np.ones(64, int), mid_shift=3, mid_bits=8,
                                    out_multiplier=np.ones(64, int), out_shift=9, activation_bits=4))
    layers.append(L.Dense(name="fc", weights=w(-8, 7, (25 * 5 * 64, 12)), weight_bits=4, neuron="none"))
    return es.Model(layers, input_shape=(49, 10, 1), input_bits=8)


def build_runner(target: str, prefix: Path) -> Path:
    """The runner as the install builds it: ReleaseFast; for this machine `-Dcpu=native` (the flags of
    _build_backend/edgesnn_build.py, so the very kernels of the in-process library: the same binary as
    edgesnn/_lib/edgesnn-runner), for another target its baseline CPU (aarch64-linux-musl: generic
    ARMv8-A, what any board runs; a board's own -Dcpu would give it its extensions)."""
    cpu = ["-Dcpu=native"] if target == "native" else [f"-Dtarget={target}"]
    subprocess.run([sys.executable, "-m", "ziglang", "build", "runner", "-Doptimize=ReleaseFast", *cpu,
                    "--prefix", str(prefix)], cwd=NATIVE, check=True)
    return prefix / "bin" / "edgesnn-runner"


def scheduling(pid: int) -> np.ndarray | None:
    """[CPU ns, ns waiting on a run queue, voluntary switches, involuntary switches] of process `pid`
    so far (/proc/PID/schedstat and status; None where /proc does not say)."""
    try:
        run_ns, wait_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    counts = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
              if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))}
    return np.array([int(run_ns), int(wait_ns), counts["voluntary_ctxt_switches"],
                     counts["nonvoluntary_ctxt_switches"]], float)


def interleaved(model, x, devices: dict, rounds: int, block: int, engine, placement: dict | None = None,
                budget_s: float | None = None) -> dict:
    """The devices taking turns in blocks of `block` timed calls for `rounds` rounds, each block after
    an untimed warm-up of WARM_UP_S (at least one call: it pays for the switch from the other device,
    e.g. the previous runner still spinning); a device given with a stride k takes part in every k-th
    round only (qemu: slow). Returns {device name: {"calls": [seconds per timed call], "pairs":
    [(wall seconds, engine seconds) per call]}}: after each timed block comes a block of `block`
    paired calls, for a remote device each forward timed and then followed by a STATS request
    (outside the timing) whose run_ns_total, against the one before, is the runner's engine time of
    that very call; for the in-process cpu device the bare engine call (`engine`, see engine_alone)
    timed `block` times (its wall is its engine time: the pairs' second member). Per-call pairs, not
    block sums: on a loaded machine most blocks hold a call preempted for milliseconds.
    `placement`, when given, gets {device name: summed `scheduling` deltas of this process and of the
    device's runner over its timed blocks (not the paired ones), the number of calls, and the CPUs
    each was last seen on after each block}."""
    out = {name: {"calls": [], "pairs": [], "rounds": 0} for name in devices}
    clock = time.perf_counter
    started = clock()
    for round_ in range(rounds):
        if budget_s is not None and round_ >= 20 and clock() - started > budget_s:
            break   # a loaded machine: fewer rounds rather than a run past its time (the rows say how many)
        for name, (device, stride) in devices.items():
            if round_ % stride:
                continue
            out[name]["rounds"] += 1
            warm_until = clock() + WARM_UP_S
            model.forward(x, device=device)
            while clock() < warm_until:
                model.forward(x, device=device)
            timed = out[name]["calls"]
            pid = getattr(device, "runner_pid", None) if placement is not None else None
            # this process's own figures read last before the block and first after it: reading /proc
            # (tens of us) stays out of its CPU time
            before = tuple(reversed((scheduling(pid), scheduling(os.getpid())))) if pid else None
            for _ in range(block):
                started = clock()
                model.forward(x, device=device)
                timed.append(clock() - started)
            if before is not None:
                after = (scheduling(os.getpid()), scheduling(pid))
                if all(v is not None for v in before + after):
                    host, runner, calls, cpus = placement.get(name, (0.0, 0.0, 0, []))
                    placement[name] = (host + after[0] - before[0], runner + after[1] - before[1], calls + block,
                                       cpus + [(last_cpu(os.getpid()), last_cpu(pid))])
            pairs = out[name]["pairs"]
            if isinstance(device, str):
                engine()
                pairs.extend((None, engine()) for _ in range(block))
                continue
            total = device.stats()["run_ns_total"]
            for _ in range(block):
                started = clock()
                model.forward(x, device=device)
                wall = clock() - started
                now = device.stats()["run_ns_total"]
                pairs.append((wall, (now - total) * 1e-9))
                total = now
    return out


def last_cpu(pid: int) -> int | None:
    """The CPU process `pid` last ran on (/proc/PID/stat field 39), None where /proc does not say."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def engine_per_cpu(engine, rounds: int, block: int, model=None, x=None, runners: dict | None = None) -> dict:
    """{"in process": {CPU: [seconds per bare engine call]}, "runner": {CPU: [...]}}: this process
    pinned to each CPU it may use in turn and the bare engine call timed there; and, given `runners`
    ({CPU: a RemoteDevice whose runner was started with --cpu CPU}), the runner's own engine time per
    call (STATS after each forward of `x`) with this process pinned to another CPU. Interleaved: on
    a VM one vCPU can run the same code much slower than the other for minutes (its physical core
    shared, its clock lowered), and a runner on the slow vCPU then reads an engine slower than the
    in-process one for no fault of its build. Affinity is restored after."""
    allowed = sorted(os.sched_getaffinity(0))
    times = {"in process": {cpu: [] for cpu in allowed}, "runner": {cpu: [] for cpu in (runners or {})}}
    try:
        for _ in range(rounds):
            for cpu in allowed:
                os.sched_setaffinity(0, {cpu})
                engine()
                times["in process"][cpu].extend(engine() for _ in range(block))
                device = (runners or {}).get(cpu)
                if device is None:
                    continue
                os.sched_setaffinity(0, set(allowed) - {cpu})
                model.forward(x, device=device)
                total = device.stats()["run_ns_total"]
                for _ in range(block):
                    model.forward(x, device=device)
                    now = device.stats()["run_ns_total"]
                    times["runner"][cpu].append((now - total) * 1e-9)
                    total = now
    finally:
        os.sched_setaffinity(0, allowed)
    return times


def engine_alone(model, x):
    """A callable that runs `model` on `x` once through the bare native call (esnn_run_batch via
    ctypes, on a context of its own, arguments made once) and returns the seconds that call took."""
    from edgesnn import native

    loaded = native.native_model(model)
    context = native._Context(loaded)
    x5 = np.ascontiguousarray(x[:, None], dtype=np.uint8)
    context._output_buffer(x5.shape[0])
    arguments = (context.handle, native._input_pointer(x5), ctypes.c_size_t(x5.size), x5.shape[0], 1, 1,
                 *context._output_arguments, *context._counts_arguments)
    call, clock = context._run_batch, time.perf_counter

    def run() -> float:
        started = clock()
        status = call(*arguments)
        elapsed = clock() - started
        if status != native.STATUS_OK:
            raise RuntimeError(f"esnn_run_batch status {status}")
        return elapsed

    run.keep = (context, x5)   # the context and input live as long as the callable
    run.plan = plan_of(loaded.arena_bytes, loaded.plan_arena_bytes)
    run.plan_arena_bytes = loaded.plan_arena_bytes
    return run


def plan_of(arena_bytes: int, plan_arena_bytes: dict) -> str:
    """The arena plan ("fast" / "lean", native/src/planner.zig) whose arena is `arena_bytes` bytes."""
    names = [name for name, size in plan_arena_bytes.items() if size == arena_bytes]
    return "/".join(names) if names else f"unknown ({arena_bytes:,} B)"


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    virtual = ", a VM" if " hypervisor" in flags else ""
    pcid = "" if not flags or " pcid" in flags else ", no PCID (a process switch flushes the TLB)"
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs{virtual}{pcid}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--with-no-spin", action="store_true",
                        help="also the link with spinning off on both sides (spin_us=0, --spin-us 0)")
    parser.add_argument("--spin-us", type=float, default=None, help="the host's spin bound (default: the plugin's)")
    parser.add_argument("--runner-spin-us", type=int, default=None, help="the runner's --spin-us (default: its own)")
    parser.add_argument("--no-qemu", action="store_true")
    parser.add_argument("--build-runner", action="store_true",
                        help="build the host's runner now instead of using the installed edgesnn/_lib/edgesnn-runner")
    parser.add_argument("--pin", action="store_true",
                        help="this process (and so the in-process cpu device) on CPU 0, the runners on CPU 1 (the "
                             "runner's --cpu): each on a core of its own; unpinned, the scheduler often queues "
                             "host and runner on one core")
    parser.add_argument("--budget-s", type=float, default=30.0,
                        help="at most this many seconds of rounds per model (at least 20 rounds; default 30): "
                             "a loaded machine runs fewer rounds instead of running long")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    rounds, block = (40, 10) if args.quick else (200, 10)

    from edgesnn_remote import RemoteDevice

    started_s = time.monotonic()
    print(machine())
    load_before = load_average()
    print(f"load average at the start: {load_before}", flush=True)
    mnist = es.Model.load(ROOT / "edgesnn" / "data" / "mnist_cnn_4bit.esnn")
    rng = np.random.default_rng(0)
    x_kws = rng.integers(0, 256, (1, 49, 10, 1)).astype(np.uint8)
    x_kws[rng.random(x_kws.shape) < 0.5] = 0
    echo = es.Model([L.Dense(name="d", weights=np.ones((4, 2), int), weight_bits=4, neuron="none")],
                    input_shape=(1, 1, 4))
    cases = {"mnist": (mnist, _mnist_input(mnist)), "kws": (kws_model(), x_kws),
             "echo": (echo, np.ones((1, 1, 1, 4), np.uint8))}
    cpu = "cpu (in process)"

    with tempfile.TemporaryDirectory() as work:
        from edgesnn_remote.device import runner_path

        built_s = time.monotonic()
        installed = runner_path()
        if installed is not None and installed.is_file() and not args.build_runner:
            host_runner = installed   # pip install built it with build_runner's flags: the same binary
            print(f"runner: {host_runner} (the installed one; --build-runner builds it afresh)", flush=True)
        else:
            host_runner = build_runner("native", Path(work) / "host")
            print(f"runner: built now ({time.monotonic() - built_s:.0f} s)", flush=True)
        spin = {} if args.spin_us is None else {"spin_us": args.spin_us}
        pin = []
        if args.pin:
            if not {0, 1} <= os.sched_getaffinity(0):
                sys.exit("--pin needs CPUs 0 and 1")
            os.sched_setaffinity(0, {0})
            pin = ["--cpu", "1"]
            print("configuration: pinned: this process (the in-process cpu device too) on CPU 0, the runners on "
                  "CPU 1 (--cpu 1)", flush=True)
        else:
            print("configuration: unpinned: host and runners where the scheduler puts them (the placement table "
                  "says where they ran)", flush=True)
        runner = [host_runner] + pin + ([] if args.runner_spin_us is None else ["--spin-us", str(args.runner_spin_us)])
        devices = {cpu: ("cpu", 1),
                   "remote stdio": (RemoteDevice(runner, **spin), 1),
                   "remote tcp (loopback)": (RemoteDevice(runner, listen=True, **spin), 1)}
        if args.with_no_spin:
            devices["remote stdio, no spin"] = (RemoteDevice([host_runner, *pin, "--spin-us", "0"], spin_us=0), 1)
            devices["remote tcp, no spin"] = (RemoteDevice([host_runner, *pin, "--spin-us", "0"], listen=True,
                                                           spin_us=0), 1)
        qemu = None if args.no_qemu else shutil.which("qemu-aarch64")
        if qemu:
            built_s = time.monotonic()
            arm_runner = build_runner("aarch64-linux-musl", Path(work) / "aarch64")   # zig's cache: quick when built before
            print(f"aarch64 runner: built ({time.monotonic() - built_s:.0f} s)", flush=True)
            devices["remote stdio, aarch64 under qemu"] = (RemoteDevice([qemu, arm_runner], timeout_s=60), QEMU_STRIDE)
        # a runner kept on each CPU, for the engine per CPU (not with --pin: this process keeps CPU 0 then)
        allowed = sorted(os.sched_getaffinity(0))
        pinned_runners = {} if args.pin or len(allowed) < 2 else {
            c: RemoteDevice([host_runner, "--cpu", str(c)]) for c in allowed}
        results, plans, vcpus = {}, {}, {}
        for model_name, (model, x) in cases.items():
            expected = model.forward(x, device="cpu")
            for device_name, (device, _) in devices.items():
                np.testing.assert_array_equal(model.forward(x, device=device), expected)
            engine = engine_alone(model, x)
            plans[model_name] = {cpu: engine.plan} | {
                name: plan_of(model.device_cache[device].loaded["arena_bytes"], engine.plan_arena_bytes)
                for name, (device, _) in devices.items() if not isinstance(device, str)}
            print(model_name, "arena plan:", plans[model_name], flush=True)
            placement = {}
            measured = interleaved(model, x, devices, rounds, block, engine, placement, args.budget_s)
            per_cpu = engine_per_cpu(engine, max(1, rounds // 5), block, model, x, pinned_runners)
            vcpus[model_name] = {side: {cpu_: statistics.median(t) * 1e6 for cpu_, t in by_cpu.items()}
                                 for side, by_cpu in per_cpu.items()}
            cpu_latency = statistics.median(measured[cpu]["calls"]) * 1e6
            engine_process = statistics.median(e for _, e in measured[cpu]["pairs"]) * 1e6
            for device_name, m in measured.items():
                timed, pairs = m["calls"], m["pairs"]
                latency = statistics.median(timed) * 1e6
                row = {"latency_us": latency, "runs_per_s": 1e6 / latency, "ratio_to_cpu": latency / cpu_latency,
                       "p25_us": float(np.percentile(timed, 25) * 1e6), "p75_us": float(np.percentile(timed, 75) * 1e6),
                       "calls": len(timed), "rounds": m["rounds"], "cpu_us": cpu_latency, "engine_process_us": engine_process,
                       "engine_us": statistics.median(e for _, e in pairs) * 1e6}
                if pairs[0][0] is None:   # in process: its latency minus the bare engine call's
                    row["beside_engine_us"] = latency - engine_process
                else:   # the median over the paired calls of each call's wall - its own engine time
                    row["beside_engine_us"] = statistics.median(w - e for w, e in pairs) * 1e6
                    row["paired_latency_us"] = statistics.median(w for w, _ in pairs) * 1e6
                if not isinstance(devices[device_name][0], str):
                    row["over_cpu_us"] = latency - cpu_latency
                    row["engine_slower_us"] = row["engine_us"] - engine_process
                if device_name in placement:
                    host, runner, calls, cpus = placement[device_name]
                    row.update({"host_switches": (host[2] + host[3]) / calls, "runner_switches": (runner[2] + runner[3]) / calls,
                                "runner_queued_us": runner[1] / calls * 1e-3, "host_queued_us": host[1] / calls * 1e-3,
                                "host_cpu_us": host[0] / calls * 1e-3, "runner_cpu_us": runner[0] / calls * 1e-3,
                                "host_cpus": cpu_shares(c[0] for c in cpus), "runner_cpus": cpu_shares(c[1] for c in cpus),
                                "same_cpu_share": sum(h == r for h, r in cpus) / max(len(cpus), 1)})
                results[(model_name, device_name)] = row
                print(model_name, device_name, {k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)
            print(model_name, "engine per CPU:", {side: {c: round(v, 1) for c, v in by_cpu.items()}
                                                  for side, by_cpu in vcpus[model_name].items()}, flush=True)
        for device in [d for d, _ in devices.values() if not isinstance(d, str)] + list(pinned_runners.values()):
            device.close()

    load_after = load_average()
    configuration = ("pinned (--pin): this process and the in-process cpu device on CPU 0, every runner on CPU 1 "
                     "(--cpu 1): a core each, as on a board" if args.pin else
                     "unpinned: host and runners where the scheduler puts them (each verdict says whether they were "
                     "co-located: last seen on one CPU after most timed blocks)")
    verdicts = [f"configuration measured: {configuration}; load average {load_before} at the start, {load_after} "
                f"at the end; {os.cpu_count()} CPUs; {time.monotonic() - started_s:.0f} s",
                f"target judged on: the link's overhead = the median over the paired batch-1 calls of (remote wall "
                f"time - the runner's own engine time of that call), < {TARGET_US:.0f} us on loopback, per model "
                f"(mnist, kws) and transport (stdio, tcp); 'remote - in-process cpu' is printed beside it"]
    for model_name in ("mnist", "kws"):
        for device_name, transport in (("remote stdio", "stdio"), ("remote tcp (loopback)", "tcp")):
            row, in_process = results[(model_name, device_name)], results[(model_name, cpu)]
            link = row["beside_engine_us"]
            where = ""
            if "runner_switches" in row:
                colocated = row["same_cpu_share"] > 0.5   # last seen on one CPU after most blocks
                share = row["same_cpu_share"] if colocated else 1 - row["same_cpu_share"]
                where = (f" [{'co-located on one core' if colocated else 'on separate cores'} after "
                         f"{100 * share:.0f}% of blocks / {row['rounds']} rounds: switches per call host "
                         f"{row['host_switches']:.2f} / runner {row['runner_switches']:.2f}; CPU per call host "
                         f"{row['host_cpu_us']:.1f} us / runner {row['runner_cpu_us']:.1f} us; host on CPU "
                         f"{row['host_cpus']}, runner on CPU {row['runner_cpus']}]")
            verdicts.append(f"verdict {model_name} {transport} ({'pinned' if args.pin else 'unpinned'}, load "
                            f"{load_before.split()[0]}-{load_after.split()[0]}): the link's overhead {link:.1f} us "
                            f"per run: target < {TARGET_US:.0f} us {'MET' if link < TARGET_US else 'NOT MET'}; "
                            f"remote - in-process cpu {row['over_cpu_us']:.1f} us (the runner's engine "
                            f"{row['engine_slower_us']:+.1f} us against in process; in process wall - engine "
                            f"{in_process['beside_engine_us']:.1f} us){where}")
    notes = ("arena plans: " + "; ".join(f"{m}: " + ", ".join(f"{d} {p}" for d, p in ps.items())
                                          for m, ps in plans.items()) + "\n"
             + "engine per CPU, in process / the runner kept there with --cpu (median, us): " + "; ".join(
                 f"{m}: " + ", ".join(f"CPU {c} {v:.1f}" + (f" / {cs['runner'][c]:.1f}" if c in cs["runner"] else "")
                                      for c, v in cs["in process"].items()) for m, cs in vcpus.items()) + "\n")
    table = (markdown(results) + "\n" + placement_markdown(results) + "\n" + notes + f"{machine()}\nload average: {load_before} at the start, {load_after} at the end\n"
             + "".join(f"{line}\n" for line in verdicts))
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "load_before": load_before, "load_after": load_after,
                                               "plans": plans, "engine_per_cpu_us": vcpus, "verdicts": verdicts,
                                               "rows": {f"{m} / {d}": r for (m, d), r in results.items()}}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table)


def cpu_shares(cpus) -> str:
    """'CPU 0 70%, CPU 1 30%' of the CPUs a process was last seen on after each timed block."""
    cpus = [c for c in cpus if c is not None]
    if not cpus:
        return "?"
    return ", ".join(f"{c} {100 * cpus.count(c) / len(cpus):.0f}%" for c in sorted(set(cpus)))


def _mnist_input(model) -> np.ndarray:
    try:
        from edgesnn import datasets

        images = datasets.mnist()[2]   # the test digits
        image = np.asarray(images[:1])
        return image.reshape(1, *model.input_shape).astype(np.uint8)
    except Exception:   # the digits are a nicety; the timing does not depend on them much
        return np.random.default_rng(1).integers(0, 256, (1, *model.input_shape)).astype(np.uint8)


def placement_markdown(results: dict) -> str:
    """Per remote call: the context switches of this process and of the runner, and the time each spent
    queued for a CPU (/proc schedstat): ~0 switches when each spins on a core of its own, ~1 each when
    the scheduler queues them on one core and every call hands the CPU over and back; the CPU time
    each used per call (the host's includes its Python and spins, the runner's its engine and
    spins); and the CPUs each was last seen on after its timed blocks."""
    lines = ["| model | device | host switches / call | runner switches / call | host queued / call "
             "| runner queued / call | host CPU / call | runner CPU / call | host on CPU | runner on CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for (model, device), row in results.items():
        if "runner_switches" in row:
            lines.append(f"| {model} | {device} | {row['host_switches']:.2f} | {row['runner_switches']:.2f} "
                         f"| {row['host_queued_us']:.1f} us | {row['runner_queued_us']:.1f} us "
                         f"| {row['host_cpu_us']:.1f} us | {row['runner_cpu_us']:.1f} us "
                         f"| {row['host_cpus']} | {row['runner_cpus']} |")
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    """Per model and device: latency; the engine's own time per call (the runner's, from STATS after
    each paired call; for cpu the bare engine call in process, same rounds); **wall - engine** (for a
    remote device the median of each paired call's wall - its engine time: the link's overhead: framing, CRCs, syscalls, switches and the host's Python; for cpu the
    in-process Python around the engine); the in-process cpu latency, remote - cpu, and the runner's
    engine against the in-process one."""
    lines = ["| model | device | batch-1 latency (p25-p75) | runs/s | engine per call | wall - engine "
             "| cpu in process | remote - cpu | engine: runner - in process |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, device), row in results.items():
        cells = [model, device, f"{row['latency_us']:.1f} us ({row['p25_us']:.0f}-{row['p75_us']:.0f})",
                 f"{row['runs_per_s']:,.0f}", f"{row['engine_us']:.1f} us", f"**{row['beside_engine_us']:.1f} us**",
                 f"{row['cpu_us']:.1f} us"]
        if "over_cpu_us" in row:
            cells += [f"{row['over_cpu_us']:.1f} us", f"{row['engine_slower_us']:+.1f} us"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
