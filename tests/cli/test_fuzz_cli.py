"""Property-based fuzz of the command line's argument handling (hypothesis).

Every subcommand gets random flags with random values (ints, negatives, floats, NaN, empty,
whitespace, unicode, paths that do not exist, the flag's own choices) and a model directory
that does not exist, so no run reaches a real load. Each call must end in argparse's usage
error or help (SystemExit 2 / 0) or the command's own one-line error (exit code 2), never a
stray traceback. (How fast a bad argument fails is timed in test_cli_checks.py; here the first
call of each command also pays its imports.) `test_zz_count` prints how many argument lists were tried.
"""

from __future__ import annotations

import argparse
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.cli import build_parser, main

PARSER = build_parser()
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS = sorted(SUB.choices)
TRIED = {"n": 0}
VALUES = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(["0", "-1", "1e9", "2147483648", "1.5", "nan", "inf", "",
                                                  " ", "\t", "héllo", "日本", "🙂", "/nonexistent/x.json",
                                                  "mlp_post:99", "resid_post:-1", "x" * 300]),
    st.text(max_size=12),
)


def _flags(cmd: str) -> list[argparse.Action]:
    return [a for a in SUB.choices[cmd]._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)
            and "--model" not in a.option_strings and "--out" not in a.option_strings]


@st.composite
def argv(draw):
    cmd = draw(st.sampled_from(COMMANDS))
    flags = _flags(cmd)
    out = [cmd]
    for action in draw(st.lists(st.sampled_from(flags), max_size=4, unique_by=id)) if flags else []:
        out.append(action.option_strings[-1])
        if action.nargs == 0:
            continue
        pool = [VALUES] + ([st.sampled_from([str(c) for c in action.choices])] if action.choices else [])
        out.append(draw(st.one_of(*pool)))
    if draw(st.booleans()):
        out.append(draw(VALUES))                     # a stray positional
    return out


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(args=argv())
def test_cli_arguments(args, tmp_path_factory, capsys):
    cmd = args[0]
    extra = ["--model", "/nonexistent/model-dir"]
    if any("--out" in a.option_strings for a in SUB.choices[cmd]._actions):
        extra += ["--out", str(tmp_path_factory.mktemp("out"))]
    TRIED["n"] += 1
    t0 = time.perf_counter()
    try:
        code = main(args + extra)
    except SystemExit as exc:                        # argparse: usage error (2) or --help (0)
        code = exc.code
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code in (0, 2), f"{args}: exit {code}\n{err[-2000:]}"
    TRIED["max_s"] = max(TRIED.get("max_s", 0.0), seconds)
    if code == 2:
        assert "Traceback" not in err and err.strip(), f"{args}: {err[-2000:]}"


def test_zz_count():
    print(f"CLI_FUZZ_INPUTS={TRIED['n']} slowest={TRIED.get('max_s', 0):.1f}s")
    assert TRIED["n"] >= 250
