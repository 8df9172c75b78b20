"""The ``rwf`` command (also ``python -m rwf_render``).

    rwf fit {image,sdf,nerf} [INPUT] [options]    train a field; writes a run directory
    rwf eval RUN                                   recompute metrics from the checkpoint
    rwf render RUN [options]                       render from the checkpoint
    rwf export mesh RUN [options]                  extract a mesh (sdf and nerf runs)
    rwf export cameras RUN [options]               the cameras as a transforms.json (nerf runs)
    rwf <plugin> ...                               commands installed by other packages (``rwf data``, ``rwf view``)

Pipelines are modules of this package exposing ``add_fit_arguments(parser)``, ``fit(args)``, and optionally
``eval_run(run, cfg, args)``, ``render_run(run, cfg, args)``, ``export_mesh_run(run, cfg, args)``. Plugins are
``register(subparsers)`` functions found under the entry-point group ``rwf_render.commands``, so the library never
imports the packages built on top of it.

User errors (:class:`~rwf_render.errors.UserError`, bad options) print one line and exit with code 2. The
toolkit's warnings about the user's data or setup (:class:`~rwf_render.errors.RwfWarning`: a frame without its
image, a backend fallback) print as one line ``rwf: warning: ...`` while the command runs; library users keep
Python's usual warning output.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import importlib.util
import os
import sys
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from .errors import RwfWarning, UserError, out_of_memory
from .signals import deferred_interrupts, restore_signals, stop_if_interrupted, terminate_like_interrupt

PIPELINES = {"image": "rwf_render.image", "sdf": "rwf_render.sdf", "nerf": "rwf_render.nerf"}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block) and exit code 2, and no abbreviated options: with
    them ``rwf fit sdf --res 32`` (``--res`` is an option of ``rwf export mesh``) was read as ``--resume`` of a
    mesh named 32."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102
        # the top level's prog is "rwf", which the printed "rwf: error: " already names
        where = f"{self.prog}: " if " " in self.prog else ""
        raise UserError(f"{where}{message} (see --help)")

    def parse_args(self, args=None, namespace=None):  # noqa: D102
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse's own message came from the top level, without the command or a hint
            chosen = _chosen_parser(self, sys.argv[1:] if args is None else list(args))
            hints = [_option_hint(self, chosen, extra) for extra in extras]
            hints = "; ".join(h for h in hints if h)
            chosen.error(f"unrecognized arguments: {' '.join(extras)}{f' ({hints})' if hints else ''}")
        return parsed


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _chosen_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub-)command parser that ``argv`` selects: ``rwf fit image ...`` -> the parser of ``rwf fit image``."""
    for token in argv:
        parser = _subcommands(parser).get(token, parser)
    return parser


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]


def _option_hint(root: argparse.ArgumentParser, chosen: argparse.ArgumentParser, extra: str) -> str:
    """"did you mean --steps" for a misspelt option; for an option of another command, which command has it (``rwf
    fit sdf --res 32``: --res is ``rwf export mesh``'s; the nearest spelling, --resume, would mislead)."""
    if not extra.startswith("-"):  # a command whose positionals are easy to get wrong says how they go
        return getattr(chosen, "positionals_hint", "")
    if not extra.startswith("--"):
        return ""
    name = extra.partition("=")[0]
    if name in _long_options(chosen):  # typed before the sub-command: the parser above did not know it
        return f"give {name} after '{chosen.prog}'"
    elsewhere, named, stack = [], [], [root]
    while stack:
        parser = stack.pop()
        stack.extend(dict.fromkeys(_subcommands(parser).values()))  # aliases share one parser
        if parser is not chosen and not _subcommands(parser) and name in _long_options(parser):
            elsewhere.append(parser.prog)
        if parser is not chosen and not _subcommands(parser) and parser.prog.split()[-1] == name[2:]:
            named.append(parser.prog)  # rwf data colmap --downscale: rwf data downscale is the tool for it
    command = f", and {named[0]} a command of its own" if named else ""
    if elsewhere:  # the commands nearest the one typed first (rwf export cameras before rwf data colmap)
        family = chosen.prog.split()
        elsewhere.sort(key=lambda prog: (-sum(a == b for a, b in zip(prog.split(), family)), len(prog.split()), prog))
        shown = elsewhere[:3] + ([f"{len(elsewhere) - 3} more"] if len(elsewhere) > 3 else [])
        listed = f"{', '.join(shown[:-1])} and {shown[-1]}" if len(shown) > 1 else shown[0]
        return f"{name} is an option of {listed}{command}"
    if named:
        return f"{named[0]} is a command of its own"
    close = difflib.get_close_matches(name, _long_options(chosen), n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else ""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_in(lo: int, hi: int, what: str):
    """An argparse type: an integer in [lo, hi], else a one-line message naming ``what`` it is."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    return parse


port_number = int_in(0, 65535, "a port number (0: any free port)")
seed_number = int_in(0, 2**32 - 1, "a seed (an integer >= 0)")
MAX_RENDER_SCALE = 1e6
"""--scale at most: every pipeline's own size limit is far below, and a larger factor overflows the pixel count"""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def positive_at_most(hi: float, what: str = ""):
    """An argparse type: a number in (0, hi]; ``what`` says why the bound (in the message)."""

    def parse(text: str) -> float:
        value = positive_float(text)
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be in (0, {hi:g}]{what}, got {text}")
        return value
    return parse


render_scale = positive_at_most(MAX_RENDER_SCALE)


def nonneg_ratio(text: str) -> float:
    """A finite number >= 0, written as a decimal or as a fraction A/B (instant-ngp writes cone angles as 1/256)."""
    parts = text.split("/")
    try:
        if len(parts) > 2:
            raise ValueError
        value = float(parts[0]) / (float(parts[1]) if len(parts) == 2 else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 such as 0.004 or 1/256, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def add_run_arguments(p: argparse.ArgumentParser, kind: str, compare: bool = True) -> None:
    """The options every ``rwf fit <kind>`` shares: run directory, resume, device, seeding, progress."""
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="RUN", help=f"run directory (default: runs/{kind}-<name>-<time>)")
    g.add_argument("--force", action="store_true",
                   help="replace an existing run (a camera_path.json saved by the viewer stays)")
    g.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    if compare:
        g.add_argument("--compare", action="store_true", help="train plain, wn and rwf at equal budget into RUN/*")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(g)
    g.add_argument("--seed", type=seed_number, default=0, help="seeds the model and the sampling, 0..2^32-1 (default 0)")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")


def add_device_argument(p) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute (default: auto, the GPU when torch sees one, else the CPU)")


def _pipeline(kind: str):
    if kind not in PIPELINES:
        raise UserError(f"unknown run kind {kind!r}")
    try:
        return importlib.import_module(PIPELINES[kind])
    except ModuleNotFoundError as e:
        if e.name == PIPELINES[kind]:
            raise UserError(f"the {kind} pipeline is not available in this version") from None
        raise


def _available_pipelines() -> list[str]:
    return [k for k, mod in PIPELINES.items() if importlib.util.find_spec(mod) is not None]


def option_typed(args, dest: str, default) -> bool:
    """Whether option ``dest`` was typed (even at its default value): from the record ``dispatch`` keeps in
    ``args.given_options``; for a namespace built otherwise (a call from code), whether it differs from ``default``."""
    typed = getattr(args, "given_options", None)
    return dest in typed if typed is not None else getattr(args, dest, default) != default


def _run_command(action: str, owned: dict | None = None):
    """The handler of ``rwf ACTION RUN``; ``owned`` maps the dest of each option a pipeline added to (the
    pipelines that take it, action), so an option of another pipeline's runs is refused instead of silently
    ignored."""

    def handler(args) -> int:
        from .rundir import check_writable, hold_run, load_run_config  # noqa: PLC0415

        cfg = load_run_config(args.run)
        if action == "eval" and cfg.get("kind") == "nerf":  # it writes metrics.json: said before the renders
            check_writable(Path(args.run))  # (minutes on a NeRF test split); image and sdf evals only print
        hold_run(Path(args.run))
        kind = cfg["kind"]
        module = _pipeline(kind)
        fn = getattr(module, f"{action}_run", None)
        if fn is None:
            raise UserError(f"'rwf {action.replace('_', ' ')}' does not apply to {kind} runs")
        for dest, (owners, option) in (owned or {}).items():
            if kind not in owners and option_typed(args, dest, option.default):
                raise UserError(f"{option.option_strings[0]} applies to {' and '.join(owners)} runs, not to {kind} "
                                f"runs like {args.run}")
        return fn(Path(args.run), cfg, args) or 0
    return handler


def _export_cameras(args) -> int:
    """``rwf export cameras RUN``: nerf runs only (an image or sdf run has no cameras)."""
    from .rundir import hold_run, load_run_config  # noqa: PLC0415

    cfg = load_run_config(args.run)
    hold_run(Path(args.run))
    if cfg["kind"] != "nerf":
        raise UserError(f"'rwf export cameras' applies to nerf runs, not to {cfg['kind']} runs like {args.run} (their "
                        "input has no cameras)")
    from .nerf_cameras import export_cameras_run  # noqa: PLC0415

    return export_cameras_run(Path(args.run), cfg, args)


def _add_pipeline_arguments(parser: argparse.ArgumentParser, hook: str) -> dict:
    """Let each pipeline add its options for one command (``hook``: add_render_arguments, ...); returns
    {dest: (pipelines, action)} for the options each added: the pipeline that added it, and those whose module's
    ``SHARED_OPTIONS[hook]`` names its dest (an sdf run's ``rwf render --orbit N``)."""
    owned = {}
    modules = {kind: importlib.import_module(PIPELINES[kind]) for kind in _available_pipelines()}
    for kind, module in modules.items():
        if hasattr(module, hook):
            before = set(map(id, parser._actions))
            getattr(module, hook)(parser)
            owned.update({a.dest: ((kind,), a) for a in parser._actions if id(a) not in before})
    for kind, module in modules.items():
        for dest in getattr(module, "SHARED_OPTIONS", {}).get(hook, ()):
            if dest in owned:
                owned[dest] = (owned[dest][0] + (kind,), owned[dest][1])
    return owned


def _with_live_viewer(fit):
    """``--view``: attach the viewer package's live callback (entry point ``rwf_render.live``) to the trainer."""

    def run(args) -> int:
        if getattr(args, "resume", False) and getattr(args, "force", False):
            raise UserError("--resume continues the run in --out and --force replaces it: pass one of them")
        if getattr(args, "out", None):  # a --force killed (-9) there: settled before --resume reads its config.json
            from .replacing import settle_replaced  # noqa: PLC0415
            from .rundir import refuse_taken_out  # noqa: PLC0415

            settle_replaced(args.out)
            if not getattr(args, "resume", False):  # before the inputs load (a NeRF dataset: minutes)
                refuse_taken_out(args.out, getattr(args, "force", False))
        if not getattr(args, "view", False):
            for dest, default in (("host", "127.0.0.1"), ("port", 8080)):
                if option_typed(args, dest, default):
                    raise UserError(f"--{dest} sets the live viewer's address: it needs --view")
        if getattr(args, "view", False):
            entries = list(metadata.entry_points(group="rwf_render.live"))
            if not entries:
                raise UserError("--view: the viewer is not installed (pip install -e .)")
            from .trainer import add_process_callback  # noqa: PLC0415

            add_process_callback(entries[0].load()(args))
        return fit(args)
    return run


def build_parser() -> Parser:
    parser = Parser(prog="rwf", description="Neural fields with randomly factorized layers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    fit = sub.add_parser("fit", help="train a field on an image, a mesh or posed photos")
    fit_sub = fit.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    fit_sub.required = True
    for kind in _available_pipelines():
        module = importlib.import_module(PIPELINES[kind])
        p = fit_sub.add_parser(kind, help=module.__doc__.strip().splitlines()[0])
        module.add_fit_arguments(p)
        live = p.add_argument_group("live viewer")
        live.add_argument("--view", action="store_true", help="serve the live viewer while training")
        live.add_argument("--host", default="127.0.0.1", help="viewer address (default: this machine only)")
        live.add_argument("--port", type=port_number, default=8080,
                          help="viewer port (default 8080, the next free one when it is busy; 0: any free port)")
        p.set_defaults(func=_with_live_viewer(module.fit))

    ev = sub.add_parser("eval", help="recompute a run's metrics from its checkpoint")
    ev.add_argument("run", metavar="RUN", help="run directory")
    ev.add_argument("--quiet", action="store_true", help="nerf runs: no progress over the views (default: a bar "
                    "on a terminal, else a line per view)")
    add_device_argument(ev)
    ev.set_defaults(func=_run_command("eval"))

    rd = sub.add_parser("render", help="render a run from its checkpoint")
    rd.add_argument("run", metavar="RUN", help="run directory")
    rd.add_argument("--scale", type=render_scale, default=1.0,
                    help="resolution factor (default 1): of the fitted image (image runs), of the fit's --preview-res "
                         "views (sdf runs), of the cameras at the fit's resolution (nerf runs; 2: twice as many "
                         "pixels per side over the same field of view)")
    rd.add_argument("--out", default=None, help="output file or folder (default: inside RUN)")
    rd.add_argument("--force", action="store_true",
                    help="replace an existing output file (nerf runs and sdf --orbit: files in --out named like the "
                         "frames that no earlier render there wrote; an earlier render's frames are replaced without "
                         "it)")
    rd.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(rd)
    rd.set_defaults(func=_run_command("render", _add_pipeline_arguments(rd, "add_render_arguments")))

    ex = sub.add_parser("export", help="export a run's geometry or cameras")
    ex_sub = ex.add_subparsers(dest="what", metavar="WHAT", parser_class=Parser)
    ex_sub.required = True
    mesh = ex_sub.add_parser("mesh", help="an sdf or nerf run's surface as a mesh (marching cubes; nerf runs also "
                                            "--poisson, --tsdf or a --pointcloud)")
    mesh.add_argument("run", metavar="RUN", help="run directory")
    mesh.add_argument("--res", type=positive_int, default=256, help="grid resolution per axis (default: 256)")
    mesh.add_argument("--format", choices=["ply", "obj", "glb"], default=None, help="default: from --out, else ply")
    mesh.add_argument("--out", default=None,
                      help="output file (default: sdf runs RUN/mesh_<res>.<format>, beside the fit's mesh.ply; nerf "
                      "runs RUN/mesh.<format>, with --poisson RUN/mesh_poisson.<format>, with --tsdf "
                      "RUN/mesh_tsdf.<format>, with --pointcloud RUN/pointcloud.ply)")
    mesh.add_argument("--min-component", type=unit_fraction, default=0.0, metavar="FRACTION",
                      help="drop connected pieces with fewer than FRACTION of the faces (default 0: keep all)")
    mesh.add_argument("--force", action="store_true", help="replace an existing output file")
    mesh.add_argument("--quiet", action="store_true",
                      help="no progress bar (the grid's evaluation; nerf --pointcloud, --poisson and --tsdf: the "
                      "renders)")
    add_device_argument(mesh)
    mesh.set_defaults(func=_run_command("export_mesh", _add_pipeline_arguments(mesh, "add_export_arguments")))
    cams = ex_sub.add_parser("cameras", help="a nerf run's cameras as a transforms.json (--optimize-cameras: the "
                             "refined training poses)")
    cams.add_argument("run", metavar="RUN", help="run directory")
    cams.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                      help="the frames to write (default all: every split, with train/val/test_filenames lists)")
    cams.add_argument("--out", default=None,
                      help="output file (default: RUN/cameras.json, with --split S RUN/cameras_S.json); image paths "
                      "in it are relative to its folder")
    cams.add_argument("--force", action="store_true", help="replace an existing output file")
    cams.set_defaults(func=_export_cameras)

    for entry in metadata.entry_points(group="rwf_render.commands"):
        try:
            entry.load()(sub)
        except ImportError as e:
            print(f"rwf: warning: command {entry.name!r} unavailable ({e})", file=sys.stderr)
    return parser


FIT_INTERRUPTED = "rwf: interrupted (a fit continues from its last checkpoint with --resume)"


def _expand_home(args: argparse.Namespace) -> None:
    """``~`` and ``~/...`` values as the home folder: the shell expands ``~`` only at the start of a word, so
    ``--out=~/x`` (or a quoted "~/x") reached the command as is, and a run went into a folder named ``~`` in the
    current one, printed as ``~/x`` as though it were in the home folder."""
    def expand(v):
        if isinstance(v, (str, Path)) and (str(v) == "~" or str(v).startswith("~/")):
            return type(v)(os.path.expanduser(str(v)))
        return v

    for key, value in vars(args).items():
        if isinstance(value, list):
            setattr(args, key, [expand(v) for v in value])
        else:
            setattr(args, key, expand(value))


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None, interrupted: str = FIT_INTERRUPTED) -> int:
    """Parse, run ``args.func``; a UserError is one line on stderr and exit 2, Ctrl+C exit 130 (the default line
    ``interrupted`` mentions --resume only for ``rwf fit``: an export or a render has nothing to resume).

    Failures of the machine rather than of the input (a folder that cannot be written, a full disk, memory run
    out) are one line and exit 1; ``RWF_DEBUG=1`` keeps their traceback.
    """
    handlers = terminate_like_interrupt()
    args = None
    try:
        args = parser.parse_args(argv)
        _expand_home(args)
        args.given_options = given_options(parser, argv)
        refuse_empty_values(sys.argv[1:] if argv is None else argv, _flags(parser))
        rc = int(args.func(args) or 0)
        stop_if_interrupted()  # a Ctrl+C a library swallowed (trimesh catches BaseException): still interrupted
        return rc
    except UserError as e:
        print(f"rwf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is FIT_INTERRUPTED and getattr(args, "command", "fit") != "fit":
            interrupted = "rwf: interrupted"
        elif interrupted is FIT_INTERRUPTED:
            rundir = sys.modules.get(f"{__package__}.rundir")
            replacing = sys.modules.get(f"{__package__}.replacing")
            if rundir is None or not rundir.run_dirs_prepared():  # still reading the input: no folder, no checkpoint
                interrupted = "rwf: interrupted (before the run folder was made: nothing to resume)"
            elif replacing is not None and replacing.run_dirs_replacing():  # put back as the command ends
                interrupted = ("rwf: interrupted before the new run's first checkpoint; the run --force was "
                               "replacing is back as it was")
            elif not rundir.run_dirs_resumable():  # the folder, but not yet its config.json (an SDF fit's sampling)
                interrupted = ("rwf: interrupted (before the run's config.json was written: nothing to resume; run "
                               "the same command again)")
        print(interrupted, file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:
        if isinstance(e, BrokenPipeError) and e.filename is None and _stdout_closed():
            return 141  # stdout read by a pipe that closed (rwf data check DIR | head): ended as by SIGPIPE, quietly
        if os.environ.get("RWF_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # a path the user typed
            print(f"rwf: error: {system_failure(e)}", file=sys.stderr)
            return 2
        print(f"rwf: error: {system_failure(e, getattr(args, 'oom_hint', None))} (RWF_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if str(e).startswith("Symlink loop from ") and not os.environ.get("RWF_DEBUG"):
            print(f"rwf: error: {e}", file=sys.stderr)  # Path.resolve() on a link that leads back to itself (3.11)
            return 2
        if os.environ.get("RWF_DEBUG") or not out_of_memory(e):
            raise
        print(f"rwf: error: {system_failure(e, getattr(args, 'oom_hint', None))} (RWF_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1
    finally:
        rundir = sys.modules.get(f"{__package__}.rundir")  # not imported: no run folder was locked
        if rundir is not None:
            rundir.release_run_dirs()  # the command's run folders are free for the next one (in-process callers)
        restore_signals(handlers)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (a broken pipe of a file or of ffmpeg's stdin is an error, one
    of stdout the end of ``| head``); then stdout is pointed at /dev/null, so the exit's flush does not fail again.
    A pipe without its reader polls as an error (POLLERR)."""
    try:
        import select  # noqa: PLC0415

        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (a captured stdout), or no poll (Windows)
        return False
    if closed:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and its sub-commands that take no value (``--quiet``)."""
    flags = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
        elif action.option_strings and action.nargs == 0:
            flags.update(action.option_strings)
    return flags


def refuse_empty_values(argv: list[str], flags: set[str] = frozenset()) -> None:
    """UserError for an empty string typed as an argument (``rwf fit image ""``, ``--out ""``, ``--out=``): each
    was read as "not given", so a script with an unset variable fitted the built-in image or wrote to the default
    run folder (a fuzzing hunt)."""
    for i, arg in enumerate(argv):
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if (eq or not option) and not value.strip():
            after = (argv[i - 1] if not eq and i and argv[i - 1].startswith("-") and argv[i - 1] not in flags
                     else option)
            raise UserError(f"an empty value{f' for {after}' if after else ' as an argument'} (an unset shell "
                            "variable?); give a value or leave it out")


def given_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> frozenset[str]:
    """The dests of the options and positionals typed in ``argv`` (already parsed once by ``parser``).

    argparse fills every option left out with its default, so an option typed at its default value looks left
    out; --resume and the other-kind checks need to know what the user typed. Parsing again with every default
    suppressed leaves only the typed dests in the namespace."""
    actions, stack = [], [parser]
    while stack:
        for action in stack.pop()._actions:
            actions.append(action)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(set(action.choices.values()))
    dests = {a.dest for a in actions}
    kept = [(a, a.default) for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        return frozenset(k for k in vars(parser.parse_args(argv)) if k in dests)
    finally:
        for a, default in kept:
            a.default = default


def system_failure(e: BaseException, oom_hint: str | None = None) -> str:
    """One line for an error of the machine: the file and the reason, or the memory that ran out and what helps
    (``oom_hint``: the command's own advice, set as its parser's default ``oom_hint``)."""
    if isinstance(e, MemoryError) or out_of_memory(e):
        text = str(e).strip()
        first = text.split("DefaultCPUAllocator: ")[-1].splitlines()[0] if text else "out of memory"
        return f"out of memory ({first}); {oom_hint or 'try a smaller batch, resolution or --target-samples'}"
    if isinstance(e, OSError) and e.filename is not None:
        target = f"{e.filename} -> {e.filename2}" if e.filename2 else f"{e.filename}"
        return f"{target}: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


@contextmanager
def one_line_warnings():
    """While the command runs, this toolkit's warnings about the user's data or setup (:class:`RwfWarning`: a frame
    without its image, a backend fallback) print as ``rwf: warning: MESSAGE`` instead of Python's
    ``FILE:LINE: UserWarning: MESSAGE`` and the source line. Every other warning keeps Python's form, even one
    raised at a line of this toolkit (numpy's divide by zero, a library's deprecation), since that form names what
    to report; so does every warning with ``RWF_DEBUG=1``.

    Only the formatting is replaced (``warnings.formatwarning``): filters (``-W``, ``PYTHONWARNINGS``) still apply,
    and a caller recording warnings (``warnings.catch_warnings(record=True)``, ``pytest.warns``) still records them.
    """
    previous = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if os.environ.get("RWF_DEBUG") or not (isinstance(category, type) and issubclass(category, RwfWarning)):
            return previous(message, category, filename, lineno, line)
        text = " ".join(str(message).split("\n")).strip()
        return f"rwf: warning: {text}\n"

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        if warnings.formatwarning is format_warning:  # left alone if the command replaced it in turn
            warnings.formatwarning = previous


def standalone(register, prog: str, description: str, argv: list[str] | None, interrupted: str) -> int:
    """Run one entry-point command group (``register(subparsers)``) without the ``rwf`` entry points installed."""
    parser = Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    register(sub)
    with one_line_warnings():
        return dispatch(parser, argv, interrupted)


def main(argv: list[str] | None = None) -> int:
    with one_line_warnings():
        with deferred_interrupts() as received:
            parser = build_parser()  # imports every pipeline: seconds in which Ctrl+C may arrive
        if received:
            print("rwf: interrupted", file=sys.stderr)
            return 130
        return dispatch(parser, argv)


def console() -> int:
    """The ``rwf`` command (and ``python -m rwf_render``): :func:`main`, after which a Ctrl+C ends the process at
    once and silently. ``main`` gives Python's own SIGINT handler back when it returns (library callers keep theirs),
    so a second Ctrl+C a few ms after the first, while torch's exit handlers ran, printed a KeyboardInterrupt
    traceback."""
    import signal  # noqa: PLC0415

    code = main()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(console())
