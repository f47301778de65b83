"""`aiops` without the development environment: the images leave aiops.devenv out while the
package's metadata still names its entry point, and every command must still parse."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from aiops import cli


def _with_entry_points(monkeypatch, *points: EntryPoint) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [p for p in points if p.group == group])


def test_a_command_entry_point_whose_package_is_absent_is_left_out(monkeypatch):
    _with_entry_points(monkeypatch, EntryPoint("dev", "aiops.absentdevenv.cli:add_commands", cli.COMMANDS))
    args = cli.build_parser().parse_args(["crds", "--check"])
    assert args.check and args.func is cli._cmd_crds
    with pytest.raises(SystemExit):  # `dev` is not offered
        cli.build_parser().parse_args(["dev", "up"])


def test_a_command_module_that_fails_on_its_own_imports_raises(monkeypatch, tmp_path):
    (tmp_path / "brokencommands.py").write_text("import a_module_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _with_entry_points(monkeypatch, EntryPoint("dev", "brokencommands:add_commands", cli.COMMANDS))
    with pytest.raises(ModuleNotFoundError, match="a_module_nobody_installed"):
        cli.build_parser()


def test_the_installed_development_commands_are_offered():
    args = cli.build_parser().parse_args(["kubectl", "get", "pods"])
    assert callable(args.func)
