"""``rwf view RUN``: open a run directory in the browser (also ``python -m viewer view RUN``).

    rwf view RUN [--port 8080] [--host 127.0.0.1] [--max-res 512] [--up auto] [--device auto] [--verbose]

``register(subparsers)`` is the ``rwf_render.commands`` entry point; :func:`main` runs the same command without
the entry point being installed.
"""

from __future__ import annotations

import argparse
import sys

from rwf_render.cli import add_device_argument, int_in, port_number
from rwf_render.errors import UserError

from .app import UP_CHOICES


side = int_in(32, 4096, "a number of pixels")
DEFAULT_PORT = 8080


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (image, sdf or nerf)")
    p.add_argument("--port", type=port_number, default=None,
                   help="port, refused when busy (default 8080, or the next free one; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--max-res", type=side, default=None,
                   help="initial maximum resolution, longer side (default 512; NeRF runs on a CPU 256)")
    p.add_argument("--up", choices=UP_CHOICES, default="auto",
                   help="scene up axis (auto: image +y, sdf +y, nerf the training cameras' mean up)")
    add_device_argument(p)
    p.add_argument("--verbose", action="store_true", help="print one line per frame sent")


def register(subparsers) -> None:
    """Add ``view`` to the ``rwf`` command (entry point group ``rwf_render.commands``)."""
    p = subparsers.add_parser("view", help="open a run in the browser (web viewer)",
                              description=__doc__.strip().splitlines()[0].replace("``", ""))
    add_view_arguments(p)
    p.set_defaults(func=view)


def view(args) -> int:
    from rwf_render.trainer import resolve_device  # noqa: PLC0415

    from .app import ViewerApp, is_loopback, listen_port, open_port_note  # noqa: PLC0415
    from .sources import open_run  # noqa: PLC0415

    try:
        import viser  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("the viewer needs viser (pip install viser)") from None
    device = resolve_device(args.device)
    port = DEFAULT_PORT if args.port is None else args.port  # a port the user typed does not move when busy
    listen_port(args.host, port, move=args.port is None)  # a bad address fails before seconds of loading the run
    source = open_run(args.run, device)
    max_res = args.max_res or (256 if source.kind == "nerf" and device.type == "cpu" else 512)
    app = ViewerApp(source, host=args.host, port=port, max_res=max_res, up=args.up, verbose=args.verbose,
                    move_port=args.port is None)
    url = app.start()
    try:  # from here on, however the command ends (Ctrl+C while printing too), the viewer's threads end with it
        moved = port not in (0, app.port)
        print(f"viewer: {source.kind} run {args.run} at {url}" + (f" (port {port} was busy)" if moved else ""),
              flush=True)
        if is_loopback(args.host):
            there = {"::1": "[::1]", "127.0.0.1": "localhost"}.get(args.host, args.host)
            print(f"viewer: on a remote machine, forward the port first: ssh -L {app.port}:{there}:{app.port} HOST",
                  flush=True)
        else:
            print(f"viewer: {open_port_note(args.host, live=False)}", flush=True)
        print("viewer: Ctrl+C to stop", flush=True)
        app.serve_forever()
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM: the server has stopped; exit 130 as every interrupted command
        print("viewer: stopped", file=sys.stderr, flush=True)
        return 130
    finally:
        app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    from rwf_render.cli import standalone  # noqa: PLC0415

    return standalone(register, "python -m viewer", "The rwf web viewer.", argv, "viewer: stopped")
