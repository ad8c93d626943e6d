"""Run a check in Triton's interpreter: a fresh Python process with TRITON_INTERPRET=1 on the CPU
(the interpreter is chosen when Triton is imported, so it cannot be switched on in the test's own
process)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def run_interpreted(code: str, timeout: int = 600) -> None:
    """Run `code` (which prints "same" last when its checks hold) from the repository root; fails
    with the process's stderr otherwise. The suite's type-check hook is left off there."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORKBENCH_TYPECHECK", None)
    got = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert got.returncode == 0 and got.stdout.strip().endswith("same"), got.stderr[-3000:]
