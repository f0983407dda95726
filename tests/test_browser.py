"""The sampler in a real browser: Debian's chromium driven by playwright (never `playwright install`).

Skipped, with the reason, where chromium or playwright is missing. The page's screenshot is kept as a test artifact in
test-artifacts/sampler.png (git-ignored). The browser may only talk to the local server: every other request is refused.

To refresh the README's picture, docs/images/sampler.png, from a trained run rather than the tiny untrained model:
    GPT_MINI_SCREENSHOT_RUN=nbs/runs/small python -m pytest tests/test_browser.py -k streamed
(and GPT_MINI_SCREENSHOT_SEED=N to show the sample of seed N rather than a random one, GPT_MINI_SCREENSHOT_PRECISION=int8
or fp32 to serve that path rather than the one `auto` picks).
"""
import os, shutil, threading, time
from pathlib import Path
import pytest

pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'gpt_mini[app]')")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (it is in the [dev] extra)")

from gpt_mini.app import build_demo, free_port, launch
from gpt_mini.model import GPT, GPTConfig

pytestmark = pytest.mark.slow  # a real browser against a served page: `pytest -m "not slow"` leaves it out

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/"test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_RUN = os.environ.get("GPT_MINI_SCREENSHOT_RUN")  # a run folder to serve instead of the tiny model
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

@pytest.fixture(scope="module")
def url():
    import torch
    torch.manual_seed(0)
    if SCREENSHOT_RUN:
        demo = build_demo(Path(SCREENSHOT_RUN), device="cpu", precision=os.environ.get("GPT_MINI_SCREENSHOT_PRECISION", "auto"))
    else:
        model = GPT(GPTConfig.from_preset("tiny"))
        # The tiny model writes ~500 tokens/s, so a long generation could end before a click on Stop reaches the
        # server; 10 ms per step makes 1024 tokens take > 10 s, a window no slow CI machine can miss.
        model.transformer.wte.register_forward_pre_hook(lambda module, args: time.sleep(0.01))
        demo = build_demo(model, device="cpu", origin="a tiny untrained test model")
    yield launch(demo, port=free_port(), quiet=True)
    demo.close()

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium is not installed ({CHROMIUM} not found): apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        try: b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as e: pytest.skip(f"chromium at {CHROMIUM} could not start: {str(e).splitlines()[0]}")
        yield b
        b.close()

@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # No network: the page may load from the local server only.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#generate")
    yield page
    page.close()

def test_type_move_a_slider_generate_and_see_streamed_text(page):
    n = "160" if SCREENSHOT_RUN else "48"
    page.locator("#prompt textarea").fill("ROMEO:\nWhat light through yonder window breaks?")
    page.locator('#max_new_tokens input[type="range"]').fill(n)  # move the slider
    assert page.locator('#max_new_tokens input[type="number"]').input_value() == n
    if os.environ.get("GPT_MINI_SCREENSHOT_SEED"): page.locator("#seed input").fill(os.environ["GPT_MINI_SCREENSHOT_SEED"])
    # Record the output's length every 10 ms: streamed text shows up as many growing lengths, not one jump.
    page.evaluate("""() => { window.lengths = [];
        setInterval(() => window.lengths.push(document.querySelector('#output textarea').value.length), 10); }""")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#facts').innerText.includes('tokens/s')")
    text = page.locator("#output textarea").input_value()
    lengths = page.evaluate("window.lengths")
    growing = sorted({n for n in lengths if 0 < n < len(text)})
    assert text.strip() and len(growing) >= 2, (text, growing)
    facts = page.locator("#facts").inner_text()
    assert f"{n} tokens in" in facts and "parameters" in facts
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/"sampler.png"), full_page=True)
    if SCREENSHOT_RUN:
        readme_image = ROOT/"docs"/"images"/"sampler.png"
        readme_image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS/"sampler.png", readme_image)
        assert readme_image.stat().st_size < 200_000, "keep the README's picture small"

def test_an_empty_prompt_shows_the_error(page):
    page.locator("#prompt textarea").fill("   ")
    page.click("#generate")
    toast = page.locator(".toast-body").filter(has_text="The prompt is empty: type some text")
    toast.wait_for(state="visible")
    page.wait_for_timeout(600)  # let the message finish sliding in before the picture
    box = toast.bounding_box()
    assert box and box["y"] >= 0 and box["x"] + box["width"] <= 1280 + 1, box  # on screen
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/"sampler-empty-prompt.png"))
    # and the page still works afterwards
    page.locator("#prompt textarea").fill("Hello")
    page.locator('#max_new_tokens input[type="range"]').fill("5")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#facts').innerText.includes(' 5 tokens in ')")

def test_stop_ends_a_long_generation(page):
    page.locator('#max_new_tokens input[type="range"]').fill("1024")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#output textarea').value.length > 0")
    page.click("#stop")
    page.wait_for_function("() => document.querySelector('#facts').innerText.includes('Stopped')")
    # the server (in this process) ends the generation's worker thread ...
    t0 = time.monotonic()
    while any(t.name == "gpt_mini-sampler" for t in threading.enumerate()) and time.monotonic() - t0 < 15:
        time.sleep(0.1)
    assert not any(t.name == "gpt_mini-sampler" for t in threading.enumerate()), "the generation went on after Stop"
    # ... and the page gets no more text
    page.wait_for_timeout(300)
    stopped_at = len(page.locator("#output textarea").input_value())
    page.wait_for_timeout(700)
    assert len(page.locator("#output textarea").input_value()) == stopped_at
