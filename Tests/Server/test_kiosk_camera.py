"""A real browser follows `blip2 serve --camera -`: the page shows the camera's frame and caption, and updates
them without a reload when the next frame is captioned. Frames are JPEGs made by Debian's ffmpeg from the demo
examples, whose captions are known (Models/examples/examples.json) and checked against `blip2 caption`."""
import json
import os
import pathlib
import subprocess

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import EXAMPLES, MODEL, Server, cli

SCREENSHOT = pathlib.Path(os.environ.get("KIOSK_CAMERA_SCREENSHOT", "/tmp/kiosk-camera.png"))
EXAMPLE_CAPTIONS = {e["file"]: e["caption"] for e in json.loads((EXAMPLES / "examples.json").read_text())["examples"]}


def jpeg(name, tmp_path):
    """The example as one JPEG made by ffmpeg, and the caption `blip2 caption` gives those bytes."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(EXAMPLES / name),
                          "-q:v", "2", "-f", "mjpeg", "-"], capture_output=True, timeout=60, check=True).stdout
    assert out[:2] == b"\xff\xd8"
    path = tmp_path / (name + ".jpg")
    path.write_bytes(out)
    caption = cli("caption", str(MODEL), str(path))[0]
    assert caption == EXAMPLE_CAPTIONS[name]
    return out, caption


@pytest.fixture(scope="module")
def camera_server():
    s = Server("--camera", "-", "--camera-min-change", "0", stdin=subprocess.PIPE)
    yield s
    if s.process.stdin and not s.process.stdin.closed:
        s.process.stdin.close()
    assert s.stop() == 0


def send(server, frame):
    server.process.stdin.write(frame)
    server.process.stdin.flush()


def image_width(browser, element_id):
    return browser.execute_script("const i = document.getElementById(arguments[0]); return i.complete ? i.naturalWidth : 0;", element_id)


def test_live_frame_and_caption_update_without_reload(camera_server, browser, tmp_path):
    first, first_caption = jpeg("single-42-4.png", tmp_path)
    second, second_caption = jpeg("vertical-42-38.png", tmp_path)
    browser.get(camera_server.url + "/")
    wait = WebDriverWait(browser, 60)
    # The page finds the camera in /health and shows the live view instead of the picture picker.
    wait.until(lambda d: d.find_element(By.ID, "live").is_displayed())
    assert not browser.find_element(By.ID, "drop").is_displayed()
    assert browser.find_element(By.ID, "live-caption").text == "Waiting for the first caption…"

    send(camera_server, first)
    wait.until(lambda d: d.find_element(By.ID, "live-caption").text == first_caption)
    assert browser.find_element(By.ID, "live-card").get_attribute("data-frame") == "1"
    wait.until(lambda d: image_width(d, "live-frame") == 192 and d.find_element(By.ID, "live-frame").get_attribute("data-frame") == "1")
    wait.until(lambda d: image_width(d, "live-captioned") == 192)
    assert "frame 1" in browser.find_element(By.ID, "live-meta").text

    # The next frame arrives: same page, no reload (a marker set on the window survives only without one).
    browser.execute_script("window.stillTheSamePage = true;")
    send(camera_server, second)
    wait.until(lambda d: d.find_element(By.ID, "live-caption").text == second_caption)
    assert browser.find_element(By.ID, "live-card").get_attribute("data-frame") == "2"
    wait.until(lambda d: image_width(d, "live-frame") == 256 and d.find_element(By.ID, "live-frame").get_attribute("data-frame") == "2")
    wait.until(lambda d: image_width(d, "live-captioned") == 256)
    assert browser.execute_script("return window.stillTheSamePage === true;")
    assert "2 frames seen" in browser.find_element(By.ID, "live-state").text
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # "Ask about this frame" takes the captioned frame into the usual caption-and-questions flow.
    browser.find_element(By.ID, "live-ask").click()
    card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".caption[data-done='true']"))
    assert card.find_element(By.ID, "caption").text == second_caption
    browser.find_element(By.ID, "new").click()
    wait.until(lambda d: d.find_element(By.ID, "live").is_displayed())

    # The camera's stream ends: the page says so and keeps the last caption.
    camera_server.process.stdin.close()
    wait.until(lambda d: "ended" in d.find_element(By.ID, "live-state").text)
    assert browser.find_element(By.ID, "live-caption").text == second_caption


def test_no_camera_no_live_view(browser):
    s = Server()
    try:
        browser.get(s.url + "/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "demo-q8")
        assert browser.find_element(By.ID, "drop").is_displayed()
        assert not browser.find_element(By.ID, "live").is_displayed()
        assert not browser.find_element(By.ID, "live-open").is_displayed()
    finally:
        assert s.stop() == 0
