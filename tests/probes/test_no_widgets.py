"""Batteries render HTML without ipywidgets: `import probes.runner` and a battery run load none."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from pathlib import Path
import probes.runner
from probes.spec import parse_spec
from probes.runner import run_battery, results_paths
assert "ipywidgets" not in sys.modules, "import probes.runner loaded ipywidgets"
spec = parse_spec({spec!r})
res = run_battery(spec, {out!r}, progress=False)
_, html = results_paths(spec, {out!r})
page = Path(html).read_text()
print(json.dumps({{"ipywidgets": "ipywidgets" in sys.modules, "failed": res["counts"]["failed"],
                  "html": page.startswith("<!DOCTYPE html>"),
                  "note": "What to see:</b> answers surface late" in page}}))
"""


def test_battery_loads_no_ipywidgets(tiny_model_dir, tmp_path):
    spec = {"battery": {"name": "smallest", "model": str(tiny_model_dir), "device": "cpu",
                        "max_tokens": 256, "window": 32, "seed": 0},
            "probe": [{"kind": "knowledge", "name": "facts", "max_facts": 2,
                       "note": "answers surface late"}]}
    code = SCRIPT.format(spec=spec, out=str(tmp_path / "out"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got == {"ipywidgets": False, "failed": 0, "html": True, "note": True}
