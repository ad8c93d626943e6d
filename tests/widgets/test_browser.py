"""Real Chromium: JupyterLab runs a tour notebook, its widgets render and answer a click; an
exported report opens with the network blocked and draws every figure without console errors.

Needs Debian's chromium + chromium-driver (scripts/install_browser.sh installs them) and
selenium; skips with the reason when they cannot be had. Screenshots land in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "notebooks" / "01_memories_and_vocab.ipynb"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.real


def _ensure_browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], cwd=ROOT,
                       env={**os.environ, "VENV_PY": sys.executable}, timeout=900, check=False)
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        pytest.skip(f"Chromium not available ({CHROMIUM}, {DRIVER}) and could not be installed "
                    "by scripts/install_browser.sh (needs root + apt)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed and could not be installed")


def _driver(profile: Path, offline: bool = False):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800", f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    if offline:  # nothing resolves and every request goes to a closed local port
        opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")
        opts.add_argument("--proxy-server=127.0.0.1:9")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(DRIVER))
    if offline:
        drv.execute_cdp_cmd("Network.enable", {})
        drv.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    return drv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free localhost port, token off, serving a copy of the tour notebook."""
    _ensure_browser()
    if not TOUR.exists():
        pytest.skip(f"{TOUR.name} is not written yet")
    root = tmp_path / "lab"  # a checkout's layout: notebooks/, data/ (linked), out/
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(TOUR, root / "notebooks" / TOUR.name)
    (root / "data").symlink_to(ROOT / "data")
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    # render every cell (no virtual scrolling: outputs off screen stay in the DOM), no news
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir()
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"), "HF_HUB_OFFLINE": "1",
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root",
           "--LabApp.extension_manager=readonly", "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait(drv, cond, timeout: float, what: str, shot: Path | None = None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.5)
    if shot is not None:
        drv.save_screenshot(str(shot))
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _run_all(drv, tmp_path: Path) -> None:
    """Run > Run All Cells, through the menu bar as a person would."""
    from selenium.webdriver.common.by import By

    for item in drv.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
        if item.text.strip() == "Run":
            item.click()
            break
    cmd = _wait(drv, lambda: [e for e in drv.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                              if e.text.strip().startswith("Run All Cells")], 10,
                "the Run menu", tmp_path / "menu_failed.png")
    cmd[0].click()


def _accept_kernel_dialog(drv) -> bool:
    """Click "Select" on JupyterLab's "Select Kernel" dialog if it is up (it can open beside an
    already started kernel when the kernel specs load late, and it blocks Run All); True if it was."""
    from selenium.webdriver.common.by import By

    for dialog in drv.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
        if "Select Kernel" in dialog.text:
            dialog.find_element(By.CSS_SELECTOR, ".jp-mod-accept").click()
            return True
    return False


ERRORS_JS = """return Array.from(document.querySelectorAll(
  '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],'
  + '.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]'))
  .map(e => e.innerText).filter(t => /Error|Traceback/.test(t));"""


def test_tour_in_jupyterlab(lab, tmp_path):
    from selenium.webdriver.common.by import By

    url, root = lab
    report = root / "out" / "tours" / "tour1_report.html"
    drv = _driver(tmp_path / "profile")
    try:
        drv.get(f"{url}/lab/tree/notebooks/{TOUR.name}")
        _wait(drv, lambda: drv.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 60,
              "the notebook to open", tmp_path / "open_failed.png")
        _wait(drv, lambda: "Idle" in drv.execute_script(
            "return document.body.innerText") or drv.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"), 60,
            "the kernel to start", tmp_path / "kernel_failed.png")
        time.sleep(1.0)
        _accept_kernel_dialog(drv)
        _run_all(drv, tmp_path)

        def finished():
            if _accept_kernel_dialog(drv):   # it opened after Run All, which it blocked
                time.sleep(1.0)
                _run_all(drv, tmp_path)
                return False
            errs = drv.execute_script(ERRORS_JS)
            if errs:
                drv.save_screenshot(str(tmp_path / "error.png"))
                pytest.fail(f"the notebook printed an error: {errs[0][:2000]}")
            prompts = drv.execute_script(
                "return Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))"
                ".map(e => e.innerText.trim());")
            return (prompts and all(p not in ("", "[*]:", "[ ]:") for p in prompts)
                    and report.exists())

        _wait(drv, finished, 600, "every cell to run", tmp_path / "run_failed.png")
        explorer = _wait(drv, lambda: drv.find_elements(By.CSS_SELECTOR, ".wb-prompt-explorer"),
                         30, "the prompt explorer widget", tmp_path / "widget_failed.png")[0]
        _wait(drv, lambda: len(explorer.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 2,
              30, "the explorer's plotly figures")
        assert drv.find_elements(By.CSS_SELECTOR, ".wb-attention .js-plotly-plot"), \
            "attention view did not render"
        drv.execute_script("arguments[0].scrollIntoView()", explorer)
        time.sleep(0.5)
        drv.save_screenshot(str(tmp_path / "tour_before.png"))

        bars_js = ("var p=arguments[0].querySelectorAll('.js-plotly-plot')[1];"
                   "return [p.querySelector('.gtitle') ? p.querySelector('.gtitle').textContent : '',"
                   " Array.from(p.querySelectorAll('.trace.bars .point path'))"
                   ".map(e => e.getAttribute('d')).join('|')];")
        title0, bars0 = drv.execute_script(bars_js, explorer)
        zero = explorer.find_element(
            By.XPATH, ".//div[contains(@class,'wb-sub-')]//button[normalize-space()='zero']")
        drv.execute_script("arguments[0].scrollIntoView({block:'center'})", zero)
        zero.click()
        title1, bars1 = _wait(drv, lambda: (lambda r: r if r[1] != bars0 else None)(
            drv.execute_script(bars_js, explorer)), 60, "the next-token figure to change",
            tmp_path / "click_failed.png")
        assert "edit" in title1 and title1 != title0, (title0, title1)
        drv.execute_script("arguments[0].scrollIntoView()", explorer)
        time.sleep(0.5)
        drv.save_screenshot(str(tmp_path / "tour_after_click.png"))
        assert not drv.execute_script(ERRORS_JS)
    finally:
        drv.quit()
    assert report.exists(), "the tour did not export its report"
    _check_offline_report(report, tmp_path)


def _check_offline_report(report: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    n_fig = report.read_text(encoding="utf-8").count("class='figure'")
    assert n_fig >= 3
    drv = _driver(tmp_path / "profile_offline", offline=True)
    try:
        drv.get(report.as_uri())
        _wait(drv, lambda: len(drv.find_elements(By.CSS_SELECTOR, ".figure .main-svg")) >= n_fig,
              30, f"{n_fig} figures to draw offline", tmp_path / "report_failed.png")
        drawn = drv.execute_script(
            "return Array.from(document.querySelectorAll('.figure')).map("
            "f => f.querySelectorAll('.heatmaplayer image, .trace.bars .point, .scatterlayer .trace')"
            ".length);")
        assert all(d > 0 for d in drawn), f"empty figures: {drawn}"
        drv.save_screenshot(str(tmp_path / "report_offline.png"))
        logs = drv.get_log("browser")
        severe = [e for e in logs if e.get("level") == "SEVERE"]
        assert not severe, json.dumps(severe, indent=1)[:2000]
    finally:
        drv.quit()
