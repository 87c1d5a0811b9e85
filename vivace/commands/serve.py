"""`vivace serve`: vivace's modes, agents and pipelines behind an OpenAI-compatible HTTP API.

Why the checks come first: the port is bound and every pipeline file checked
before the engine starts, so a port in use or a bad file costs a second, not
an engine start. The runtime is opened once and shared by every client; the
server (uvicorn) stops on Ctrl-C or SIGTERM, cancels what is still running,
and the engine is shut down before the process exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Iterator

from vivace.commands._io import Parents, Subparsers, add_collection, add_compression
from vivace.config import Config
from vivace.errors import BackendError, InputError

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "VIVACE_SERVE_API_KEY"


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("serve", parents=[parents.common, parents.model, parents.engine],
                       help="serve the modes, agents and pipelines over the OpenAI API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key-env", default=DEFAULT_KEY_ENV, metavar="NAME",
                   help=f"environment variable holding the API key clients must send (default {DEFAULT_KEY_ENV}; "
                        "unset: no key)")
    p.add_argument("--pipeline", action="append", default=[], metavar="FILE",
                   help="also serve this pipeline .toml file, as a model named after the pipeline (repeatable)")
    add_collection(p, rag_alias=False, help="retrieve from this collection for requests that name none")
    add_compression(p)
    p.set_defaults(handler=cmd_serve)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the engine starts so a taken port fails at once."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a port (0-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r} is not an address this machine has: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BackendError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


async def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import uvicorn
    from rich.console import Console

    _Server = _server_class()
    from vivace.agents.driver import resolve
    from vivace.assembly import open_runtime
    from vivace.serve import ServerState, create_app

    pipelines = {}
    for path in args.pipeline:
        if not path.endswith(".toml"):
            raise InputError(f"--pipeline {path}: give a pipeline .toml file (agents are served by name already)")
        item = resolve(path)  # checked before anything starts
        pipelines[item.name] = item
    key = os.environ.get(args.api_key_env) or None
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    err = Console(stderr=True, highlight=False)
    if key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] listening on {args.host} with no API key: anyone who can reach this "
                  f"machine can use it (set {args.api_key_env})")
    try:
        with err.status(f"starting the {config.backend} backend ({config.model})..."):
            runtime = await open_runtime(config)
    except BaseException:
        sock.close()
        raise
    try:
        state = ServerState(runtime, api_key=key, pipelines=pipelines, collection=args.collection)
        app = create_app(state)
        shown = f"[{host}]" if ":" in host else host
        # One unwrapped line (rich would wrap it at the terminal's width): scripts read the URL from it.
        print(f"serving on http://{shown}:{port}/v1 · models: {', '.join(state.models())}"
              f"{' · API key required' if key else ''} · Ctrl-C stops", file=sys.stderr, flush=True)
        server = _Server(uvicorn.Config(
            app, log_level="info" if args.debug else "warning", access_log=bool(args.debug), lifespan="off",
            timeout_graceful_shutdown=3,  # then runs still going are cancelled (their engine requests aborted)
        ))
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await runtime.aclose()
    if server.signalled:
        raise KeyboardInterrupt  # the one way every command reports an interrupt: "interrupted", exit 130
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server; Ctrl-C or SIGTERM stops it and is remembered, not raised again mid-cleanup.

        (uvicorn re-raises a captured signal as it returns, which would land in
        the middle of shutting the engine down.)
        """

        signalled = False

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            originals = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        def _on_signal(self, sig: int, frame: object) -> None:
            self.signalled = True
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
            self.should_exit = True

    return Server
