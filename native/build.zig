//! Builds the edgesnn engine: `zig build` installs lib/libedgesnn.so (the Python binding's),
//! lib/libedgesnn.a (for C apps), include/edgesnn.h and, on Linux, bin/edgesnn-runner (the device
//! runner, native/runner/); `zig build test` runs the Zig tests.
//! Always LLVM: the kernels use inline assembly (vpdpbusd) the self-hosted backends do not take.
//! The Python install runs `python -m ziglang build -Doptimize=ReleaseFast` (see _build_backend/).

const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});

    const strip = b.option(bool, "strip", "Strip debug info (default: all but Debug builds)") orelse (optimize != .debug);
    const root_module = b.createModule(.{
        .root_source_file = b.path("src/exports.zig"),
        .target = target,
        .optimize = optimize,
        .pic = true,
        .strip = strip,
    });
    const shared = b.addLibrary(.{ .name = "edgesnn", .linkage = .dynamic, .root_module = root_module, .use_llvm = true });
    b.installArtifact(shared);

    const static_module = b.createModule(.{
        .root_source_file = b.path("src/exports.zig"),
        .target = target,
        .optimize = optimize,
        .strip = strip,
    });
    const static = b.addLibrary(.{ .name = "edgesnn", .linkage = .static, .root_module = static_module, .use_llvm = true });
    // a section per function and per datum: a firmware linked with --gc-sections keeps only what its
    // calls reach (without, the archive is one .text section and every function of it is linked)
    static.link_function_sections = true;
    static.link_data_sections = true;
    b.installArtifact(static);
    b.installFile("include/edgesnn.h", "include/edgesnn.h");

    // `zig build shared`: only lib/libedgesnn.so, what the Python binding loads (the tests' ReleaseSafe
    // builds for this machine's and the baseline CPU, tests/conftest.py, need neither the static
    // library nor the runner: one compile of the engine instead of three)
    const shared_step = b.step("shared", "Install only the shared library");
    shared_step.dependOn(&b.addInstallArtifact(shared, .{}).step);

    // `zig build static`: only lib/libedgesnn.a and include/edgesnn.h, for targets without dynamic
    // linking (thumb-freestanding-eabihf -Dcpu=cortex_m4) and C apps (examples/c/build.sh).
    const static_step = b.step("static", "Install only the static library and the header");
    static_step.dependOn(&b.addInstallArtifact(static, .{}).step);
    static_step.dependOn(&b.addInstallFile(b.path("include/edgesnn.h"), "include/edgesnn.h").step);

    addRunner(b, target, optimize);

    const test_module = b.createModule(.{
        .root_source_file = b.path("src/tests.zig"),
        .target = target,
        .optimize = optimize,
    });
    const tests = b.addTest(.{ .root_module = test_module, .use_llvm = true });
    const run_tests = b.addRunArtifact(tests);
    const test_step = b.step("test", "Run the engine's Zig unit tests");
    test_step.dependOn(&run_tests.step);
}

/// `zig build runner`: bin/edgesnn-runner, the device runner (native/runner/, docs/protocol.md) with the
/// engine compiled in; for a board, e.g. -Dtarget=aarch64-linux-musl (a static binary).
fn addRunner(b: *std.Build, target: std.Build.ResolvedTarget, optimize: @TypeOf(b.standardOptimizeOption(.{}))) void {
    const runner_module = b.createModule(.{
        .root_source_file = b.path("runner/main.zig"),
        .target = target,
        .optimize = optimize,
        .strip = optimize != .debug,
    });
    // the engine compiled in as the module "engine" (src/exports.zig, as native/fuzz/build.sh builds
    // the runner's fuzz target): session.zig calls its C API and reads its limits (src/limits.zig)
    runner_module.addImport("engine", b.createModule(.{ .root_source_file = b.path("src/exports.zig"), .target = target, .optimize = optimize, .strip = optimize != .debug }));
    const runner = b.addExecutable(.{ .name = "edgesnn-runner", .root_module = runner_module, .use_llvm = true });
    const install_runner = b.addInstallArtifact(runner, .{});
    const runner_step = b.step("runner", "Build the device runner bin/edgesnn-runner (docs/protocol.md)");
    runner_step.dependOn(&install_runner.step);
    // the plain `zig build` (the Python install) ships it beside the shared library; it speaks Linux syscalls
    if (target.result.os.tag == .linux) b.getInstallStep().dependOn(&install_runner.step);
}
