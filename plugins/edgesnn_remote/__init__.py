"""edgesnn's `remote` device plugin: run a Model on a device runner over a framed link.

Registered through the `edgesnn` entry-point group like any third-party plugin (pyproject.toml);
it uses only edgesnn's public API. The link protocol is docs/protocol.md; the runner native/runner/.

    board = es.device("remote", command=["qemu-aarch64", "edgesnn-runner"])
    model.forward(x, device=board)
"""

from __future__ import annotations

import edgesnn

from .device import RemoteDevice, RemoteProgram, runner_path  # noqa: F401


@edgesnn.hookimpl
def edgesnn_register_devices(register):
    register("remote", RemoteDevice)
