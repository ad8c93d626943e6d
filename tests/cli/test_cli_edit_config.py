"""`workbench edit`'s flags reach the edit's config (the run itself is tested in tests/editing)."""

from __future__ import annotations

import pytest

from workbench.cli import main


class _Got(Exception):
    pass


@pytest.mark.parametrize("method, flags, clamp", [
    ("memit", ["--clamp", "0.75"], 0.75),
    ("memit", [], 4.0),
    ("rome", ["--clamp", "1.5"], 1.5),
])
def test_clamp_reaches_the_config(tiny, tmp_path, monkeypatch, method, flags, clamp):
    import editing
    import widgets.commands.edit as cmd

    got = {}

    def run_edits(session, cases, stats, **kw):
        got.update(kw)
        raise _Got

    monkeypatch.setattr(cmd, "load_session", lambda args: tiny)
    monkeypatch.setattr(editing, "run_edits", run_edits)
    argv = ["edit", "--method", method, "--layer", "0", "--stats-tokens", "256", "--no-capability",
            "--no-progress", "--out", str(tmp_path / "o"), *flags]
    with pytest.raises(_Got):
        main(argv)
    assert got["config"].clamp == clamp
    assert type(got["config"]).__name__ == {"memit": "MemitConfig", "rome": "RomeConfig"}[method]
