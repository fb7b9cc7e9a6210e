"""The colour editor in a real browser: headless Chromium (Debian's chromium and chromium-driver, installed
by .ci/run) driven by Selenium loads the page, clicks a point, picks the first suggested colour, waits for the
preview to change, saves, and checks the saved photo: near the point its colour moved towards the chosen
chroma, and its grey is the input's. Skips only where chromium, chromedriver or selenium are absent.
The screenshot goes to $EDITOR_SCREENSHOT if set (docs/editor.png is made so), else into the test's folder."""
import json
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from colorizer import DEFAULT_MODEL, Colorizer
from editor import EditorSession
from editor_server import EditorServer
from hints import parse_colour
from lab import rgb_to_lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,760"]
X, Y = 500, 150  # a point of the sample photo's sky, where the first suggestion differs from the automatic colour


def chroma(rgb: np.ndarray, x: int, y: int, r: int = 4) -> np.ndarray:
    """Mean ab of rgb (H, W, 3) uint8 around (x, y)."""
    a = rgb[y - r:y + r + 1, x - r:x + r + 1].astype(np.float64).transpose(2, 0, 1) / 255
    return rgb_to_lab(a)[1:].reshape(2, -1).mean(1)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shipped():
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


@pytest.fixture
def editing(shipped, repo, tmp_path):
    """An EditorServer on the project's sample photo, saving into tmp_path: (server, session, source)."""
    src = repo / "data" / "sample_grey.jpg"
    session = EditorSession.open(shipped, str(src), str(tmp_path / "Coloured_sample_grey.png"))
    server = EditorServer(session, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, session, src
    server.shutdown()
    server.server_close()


def offset(stage, session, x, y):
    """Selenium's offset from the stage's centre of the photo's pixel (x, y)."""
    box = stage.rect
    scale = box["width"] / session.width
    return (x + 0.5) * scale - box["width"] / 2, (y + 0.5) * scale - box["height"] / 2


def test_click_pick_the_first_suggestion_preview_and_save(browser, editing, shipped, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, session, src = editing
    wait = WebDriverWait(browser, 60)
    browser.get(server.url)
    preview = browser.find_element(By.ID, "preview")
    wait.until(lambda _: preview.get_attribute("data-hints") == "[]")      # the automatic colours shown
    stage = browser.find_element(By.ID, "stage")
    ActionChains(browser).move_to_element_with_offset(stage, *offset(stage, session, X, Y)).click().perform()
    swatches = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#suggestions .swatch"))
    colour = swatches[0].get_attribute("data-color")
    swatches[0].click()
    wait.until(lambda _: f'"color":"{colour}"' in (preview.get_attribute("data-hints") or ""))
    browser.save_screenshot(os.environ.get("EDITOR_SCREENSHOT") or str(tmp_path / "editor.png"))
    browser.find_element(By.ID, "save").click()
    status = browser.find_element(By.ID, "status")
    wait.until(lambda _: status.get_attribute("data-saved"))

    hints = json.loads((tmp_path / "Coloured_sample_grey.hints.json").read_text())
    assert len(hints) == 1 and hints[0]["color"] == colour
    x, y = round(hints[0]["x"]), round(hints[0]["y"])
    assert abs(x - X) <= 2 and abs(y - Y) <= 2
    with Image.open(src) as im:
        grey = np.asarray(im.convert("L"), dtype=np.int16)
        auto = np.asarray(shipped.colorize(im))
    saved = Image.open(tmp_path / "Coloured_sample_grey.png")
    want = rgb_to_lab(np.array(parse_colour(colour), dtype=np.float64) / 255)[1:]
    before = np.linalg.norm(chroma(auto, x, y) - want)
    after = np.linalg.norm(chroma(np.asarray(saved.convert("RGB")), x, y) - want)
    assert after < 0.6 * before, (before, after)
    assert np.abs(np.asarray(saved.convert("L"), dtype=np.int16) - grey).max() <= 1


def test_drag_undo_redo_remove_views_and_zoom(browser, editing):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    server, session, _ = editing
    wait = WebDriverWait(browser, 60)
    browser.get(server.url)
    preview = browser.find_element(By.ID, "preview")
    stage = browser.find_element(By.ID, "stage")

    def shown():  # the hints of the edited preview on screen, as (x, y)
        return [(h["x"], h["y"]) for h in json.loads(preview.get_attribute("data-hints") or "null") or []]

    def wait_shown(want):
        wait.until(lambda _: preview.get_attribute("data-mode") == "edited" and len(shown()) == len(want)
                   and all(abs(a - c) <= 2 and abs(b - d) <= 2 for (a, b), (c, d) in zip(shown(), want)))

    def keys(*k):
        ActionChains(browser).send_keys(*k).perform()

    def ctrl(key):
        ActionChains(browser).key_down(Keys.CONTROL).send_keys(key).key_up(Keys.CONTROL).perform()

    wait.until(lambda _: preview.get_attribute("data-hints") == "[]")
    for x, y in [(100, 100), (300, 200)]:
        ActionChains(browser).move_to_element_with_offset(stage, *offset(stage, session, x, y)).click().perform()
    wait_shown([(100, 100), (300, 200)])
    points = browser.find_elements(By.CSS_SELECTOR, "#points .point")
    scale = stage.rect["width"] / session.width
    ActionChains(browser).click_and_hold(points[1]).move_by_offset(50 * scale, 30 * scale).move_by_offset(
        50 * scale, 20 * scale).release().perform()                                       # drag (300, 200) by (100, 50)
    wait_shown([(100, 100), (400, 250)])
    ctrl("z")
    wait_shown([(100, 100), (300, 200)])
    ctrl("y")
    wait_shown([(100, 100), (400, 250)])
    ActionChains(browser).context_click(browser.find_elements(By.CSS_SELECTOR, "#points .point")[0]).perform()
    wait_shown([(400, 250)])                                                               # right-click removes
    ActionChains(browser).click(browser.find_element(By.CSS_SELECTOR, "#points .point")).perform()
    keys(Keys.DELETE)
    wait_shown([])                                                                         # Delete removes
    ctrl("z")
    wait_shown([(400, 250)])
    for key, mode in [("1", "grey"), ("2", "auto"), ("3", "edited")]:
        keys(key)
        wait.until(lambda _: preview.get_attribute("data-mode") == mode)
    fit = stage.rect["width"]
    browser.find_element(By.ID, "zoom-in").click()
    assert abs(stage.rect["width"] - 1.25 * fit) <= 2
    keys("0")
    assert abs(stage.rect["width"] - fit) <= 2
