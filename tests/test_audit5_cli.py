"""Command-line messages found wrong by the README review: a doubled prefix on unknown options, and a Ctrl+C
during an export or render that pointed at --resume, which only a fit has."""

import pytest

from rwf_render import cli


def _parser(func):
    parser = cli.Parser(prog="rwf")
    sub = parser.add_subparsers(dest="command", parser_class=cli.Parser)
    for name in ("fit", "export"):
        p = sub.add_parser(name)
        p.set_defaults(func=func)
    return parser


def _interrupt(args):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, started, resume", [("fit", "config", True), ("fit", "folder", False),
                                                     ("fit", "", False), ("export", "config", False)])
def test_ctrl_c_mentions_resume_only_for_a_fit_that_wrote_its_config(tmp_path, capsys, command, started, resume):
    """A fit stopped while it still read its input has made no folder, and one stopped after making the folder but
    before writing its config.json (an SDF fit computing its samples: seconds) has nothing --resume could read:
    'nothing to resume' (a kill/resume hunt: the message pointed at a --resume that was then refused)."""
    from rwf_render.rundir import CONFIG, prepare_run_dir  # noqa: PLC0415

    def run(args):
        if started:
            prepare_run_dir(tmp_path / "run")
        if started == "config":
            (tmp_path / "run" / CONFIG).write_text("{}")
        raise KeyboardInterrupt

    assert cli.dispatch(_parser(run), [command]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwf: interrupted")
    assert ("--resume" in err[0]) == resume
    assert ("nothing to resume" in err[0]) == (command == "fit" and not resume)
    assert ("run the same command again" in err[0]) == (command == "fit" and started == "folder")


def test_a_tools_own_interrupt_line_is_kept(capsys):
    assert cli.dispatch(_parser(_interrupt), ["export"], "rwf: interrupted (nothing was written)") == 130
    assert capsys.readouterr().err.strip() == "rwf: interrupted (nothing was written)"


def test_an_unknown_option_names_rwf_once(capsys):
    assert cli.main(["eval", "/nonexistent", "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rwf: error: rwf eval: unrecognized arguments: --bogus (see --help)"


def test_a_subcommands_bad_value_names_the_subcommand(capsys):
    assert cli.main(["export", "mesh", "/nonexistent", "--res", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rwf: error: rwf export mesh: argument --res: ") and err.count("rwf:") == 1
