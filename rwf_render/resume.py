"""Resuming a run and comparing parameterizations: the saved config read back and checked against the options
typed again (an option typed with another value than the run's is refused, naming both), the checkpoint loaded
into the trainer, and the folder layout of ``--compare``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from .errors import Diverged, RwfWarning, UserError
from .rundir import (CHECKPOINT, COMPARE_PARAMS, CONFIG, load_checkpoint, prepare_run_dir, read_json)


def compare_runs(cfg, out: Path, resume: bool, force: bool) -> tuple[Path, list]:
    """For ``--compare``: the output folder (created unless resuming) and, for each of COMPARE_PARAMS, a tuple
    (param, a copy of ``cfg`` with that param, its run folder, whether that run is to be resumed). The copies
    differ in the parameterization only: same seed, data and budget."""
    root = out if resume else prepare_run_dir(out, force=force)
    runs = []
    for param in COMPARE_PARAMS:
        sub = type(cfg).from_dict(cfg.to_dict())
        sub.mlp.param = param
        runs.append((param, sub, root / param, resume and (root / param / CONFIG).is_file()))
    return root, runs


def fit_each(runs: list, fit_param) -> tuple[dict, dict]:
    """For ``--compare``: ``fit_param(param, cfg, run_dir, resume)`` for each of :func:`compare_runs`'s runs.

    A parameterization that diverges is part of the comparison's result (plain diverging where RWF trains is what
    the method is about): a warning, and the others still train. Returns what each fit returned (a tuple whose
    first item is its metrics), and the results of the comparison: each one's metrics, or ``{"param", "diverged":
    its message}``; raises the first :class:`Diverged` when none trained.
    """
    done, results = {}, {}
    for param, sub, sub_dir, resume in runs:
        try:
            done[param] = fit_param(param, sub, sub_dir, resume)
            results[param] = done[param][0]
        except Diverged as e:
            results[param] = {"param": param, "diverged": str(e)}
            warnings.warn(f"--compare: {param}: {e}; the comparison goes on without it", RwfWarning, stacklevel=2)
    if not done:
        raise Diverged(results[runs[0][0]]["diverged"])
    return done, results


def resume_config(out: Path, from_dict, steps: int | None, compare: bool = False, max_seconds: float | None = None):
    """The saved config of the run in ``out``, to resume it (``compare``: of its first run), with ``steps`` and
    ``max_seconds`` if given.

    Raises UserError when there is nothing to resume, or when the run recorded its dataset's fingerprint and the
    dataset changed since (:func:`check_dataset_unchanged`).
    """
    saved = out / (Path(COMPARE_PARAMS[0]) / CONFIG if compare else CONFIG)
    if not saved.is_file():
        from .rundir import no_config_yet  # noqa: PLC0415

        raise UserError(f"{out}: nothing to resume ({no_config_yet(out, saved.relative_to(out))})")
    saved_dict = read_json(saved)
    try:
        cfg = from_dict(saved_dict)
    except UserError as e:  # name the file, once
        raise (e if str(saved) in str(e) else UserError(f"{saved}: {e}")) from None
    check_dataset_unchanged(saved_dict, getattr(cfg, "data", None))
    if steps:
        cfg.train.steps = steps
    if max_seconds is not None:
        cfg.train.max_seconds = max_seconds
    return cfg


def resume_trainer(trainer: "Trainer", run: Path) -> None:
    """Load ``run``'s checkpoint into ``trainer`` for --resume; UserError when --steps is below the steps done.

    Shared by the image and sdf pipelines."""
    if not (run / CHECKPOINT).is_file():
        trainer.resume()  # UserError where the run shows it had a checkpoint
        print(f"rwf: {run}: no checkpoint yet; training starts at step 0", file=sys.stderr)
        return
    done = load_checkpoint(run / CHECKPOINT).get("step", 0)
    if isinstance(done, (int, torch.Tensor)) and int(done) > trainer.cfg.steps:
        raise UserError(f"{run}: --steps {trainer.cfg.steps} is below the {int(done)} steps already done")
    if trainer.resume():
        print(f"rwf: resuming {run} at step {trainer.step_idx}/{trainer.cfg.steps}", file=sys.stderr)


def resume_run_config(out: Path, kind: str, args, from_dict, config_from_args, add_fit_arguments,
                      aliases: dict | None = None) -> tuple:
    """--resume: the saved config of ``out`` (``--compare``: of its first run) with --steps and --device applied
    (--deterministic can only be turned on), and the saved dict; UserError for a run of another kind, an invalid
    config.json, or options typed on the command line that contradict the saved ones (they would be ignored: the
    run's config.json decides).

    Shared by the image and sdf pipelines (``from_dict``, ``config_from_args``, ``add_fit_arguments`` and the
    option ``aliases`` of ``option_clashes`` are the pipeline's)."""
    compare = bool(getattr(args, "compare", False))
    first = out / COMPARE_PARAMS[0] / CONFIG
    if not compare and not (out / CONFIG).is_file() and first.is_file():
        raise UserError(f"{out}: holds a --compare run; resume it with --compare")
    if compare and (out / CONFIG).is_file() and not first.is_file():
        raise UserError(f"{out}: a single run, not a --compare one; resume it without --compare")
    saved_path = first if compare else out / CONFIG
    saved = read_json(saved_path) if saved_path.is_file() else None
    if saved is not None and (not isinstance(saved, dict) or saved.get("kind") != kind):
        other = saved.get("kind") if isinstance(saved, dict) else None
        raise UserError(f"{saved_path}: a run of kind {other!r}, not {kind!r}; resume it with 'rwf fit {other}'"
                        if isinstance(other, str) else f"{saved_path}: not a valid {kind} run config")
    try:
        cfg = resume_config(out, from_dict, args.steps, compare, getattr(args, "max_seconds", None))
        from .train_config import check_train_config  # noqa: PLC0415

        check_train_config(cfg.train)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{saved_path}: not a valid {kind} run config ({type(e).__name__}: {e})") from None
    free = {"steps", "max_seconds", "device", "deterministic"} | ({"param"} if compare else set())
    clash = option_clashes(args, add_fit_arguments, config_from_args(args).to_dict(), cfg.to_dict(), aliases, free)
    if clash:
        raise UserError(f"{out}: --resume continues the run as configured in {saved_path.name}; these options "
                        f"differ from it: {'; '.join(clash)} (start a new run instead)")
    cfg.train.deterministic = cfg.train.deterministic or bool(getattr(args, "deterministic", False))
    return cfg, saved


RUN_OPTIONS = frozenset({"out", "force", "resume", "compare", "quiet", "view", "host", "port"})
"""options of a fit that are not part of the run's configuration"""


def typed_options(args, add_arguments) -> set[str]:
    """The dests of the options typed on the command line: ``cli.dispatch`` records them in
    ``args.given_options``; for a namespace built otherwise, those whose value differs from the parser's default."""
    typed = getattr(args, "given_options", None)
    if typed is not None:
        return set(typed)
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return {a.dest for a in parser._actions if getattr(args, a.dest, a.default) != a.default}


def option_leaves(dest: str, leaves, aliases: dict | None = None) -> list[str]:
    """The config entries (dotted keys of ``_leaves``) that fit option ``dest`` sets: ``aliases[dest]`` where
    the entry is named otherwise, else the entries named like the option (``lr`` -> ``train.lr``)."""
    if aliases and dest in aliases:
        return list(aliases[dest])
    return [k for k in leaves if k == dest or k.endswith("." + dest)]


def option_clashes(args, add_arguments, fresh: dict, saved: dict, aliases: dict | None = None,
                   free=()) -> list[str]:
    """For --resume: one line per option typed on the command line (besides RUN_OPTIONS and ``free``) whose
    value in ``fresh`` (the config built from the command line) differs from the run's ``saved`` config.

    An option typed at the value the run already has is no clash, so re-running the fit's own command with
    --resume added works."""
    fresh_leaves, saved_leaves = _leaves(fresh), _leaves(saved)
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    names = {a.dest: (a.option_strings[0] if a.option_strings else a.metavar or a.dest.upper())
             for a in parser._actions}
    out = []
    for dest in sorted(typed_options(args, add_arguments) & (set(names) - RUN_OPTIONS - set(free))):
        for key in option_leaves(dest, fresh_leaves, aliases):
            if fresh_leaves.get(key) != saved_leaves.get(key):
                out.append(f"{names.get(dest, dest)} (run: {saved_leaves.get(key)!r}, given: "
                           f"{fresh_leaves.get(key)!r})")
                break
    return out


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_source_unchanged(saved: dict | None, info: dict, path) -> None:
    """--resume must fit the same data: UserError when the source file changed since the run was trained."""
    old = (saved or {}).get("source", {}).get("sha256") if isinstance((saved or {}).get("source"), dict) else None
    if old and info.get("sha256") != old:
        raise UserError(f"{path}: changed since the run was trained (sha256 differs); --resume would fit different "
                        f"data (start a new run instead)")


LEGACY_KEYS = ("file_path", "mask_path", "depth_file_path")
"""the frame keys a NeRF run's fingerprint hashed before 29 Nov 2026 20:22 (no instant-ngp ``depth_path``)"""


def check_dataset_unchanged(saved: dict | None, data) -> None:
    """--resume must fit the same posed images: UserError, naming what changed, when the dataset ``data`` differs
    from the fingerprint the run saved under "dataset" in its config.json
    (:func:`rwf_render.nerf_data.dataset_fingerprint`). A run saved without one (before it was recorded) is not
    checked."""
    old = saved.get("dataset") if isinstance(saved, dict) else None
    if not isinstance(old, dict) or not isinstance(old.get("sha256"), str) or not isinstance(data, str):
        return
    from .nerf_data import changed_splits, dataset_fingerprint  # noqa: PLC0415  (image and sdf runs need none)

    new = dataset_fingerprint(data)
    if new["sha256"] == old["sha256"]:
        return
    changed = changed_splits(saved, data, current=new["splits"])
    if changed is None and dataset_fingerprint(data, LEGACY_KEYS)["sha256"] == old["sha256"]:
        return  # a run recorded before depth_path maps were hashed: the data is the same as then
    if changed is not None and "train" not in changed:  # the data fitted is the same: only what is scored moved
        if changed:
            warnings.warn(f"{data}: the {' and '.join(changed)} split{'s' if len(changed) > 1 else ''} changed since "
                          "the run was trained; it goes on with the same training data and scores the views "
                          f"{'they hold' if len(changed) > 1 else 'it holds'} now", RwfWarning, stacklevel=2)
        return
    before, after = (old.get("files") if isinstance(old.get("files"), dict) else {}), new["files"]
    what = ([f"{k} differs" for k in after if k in before and before[k] != after[k]]
            + [f"{k} is new" for k in after if k not in before] + [f"{k} is gone" for k in before if k not in after])
    what = what or ["its files differ"]
    more = f" and {len(what) - 2} more" if len(what) > 2 else ""
    raise UserError(f"{data}: the dataset changed since the run was trained ({', '.join(what[:2])}{more}; "
                    "sha256 differs); --resume would fit different data (start a new run instead)")
