"""A real browser (Debian's chromium through chromedriver, headless) uses the kiosk page."""
import os
import pathlib

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import EXAMPLES, MODEL, Server, cli

IMAGE = EXAMPLES / "row-42-16.png"
QUESTION = "what color is the cross?"
SCREENSHOT = pathlib.Path(os.environ.get("KIOSK_SCREENSHOT", "/tmp/kiosk.png"))


@pytest.fixture(scope="module")
def server():
    """A server of its own, so that the picture is not already encoded by other tests (the page then shows every stage)."""
    s = Server()
    yield s
    assert s.stop() == 0


def test_caption_question_and_screenshot(server, browser):
    expected_caption = cli("caption", str(MODEL), str(IMAGE))[0]
    expected_answer = cli("ask", str(MODEL), str(IMAGE), QUESTION)[0]
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").text == "demo-q8")
    assert browser.find_element(By.ID, "precision").text == "q8"

    browser.find_element(By.ID, "file").send_keys(str(IMAGE))
    card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".caption[data-done='true']"))
    assert card.find_element(By.ID, "caption").text == expected_caption
    assert "vision" in card.find_element(By.ID, "caption-timings").text

    box = browser.find_element(By.ID, "question")
    wait.until(lambda d: box.is_enabled())
    box.send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()
    turn = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".turn[data-done='true']"))
    assert turn.find_element(By.CSS_SELECTOR, ".q").text == QUESTION
    # The first chat turn uses the ask prompt exactly: the answer must equal `blip2 ask`.
    assert turn.find_element(By.CSS_SELECTOR, ".a").text == expected_answer
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    browser.find_element(By.ID, "new").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".caption"))
    assert browser.find_element(By.ID, "drop").is_displayed()


def test_bad_image_message(server, browser, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "demo-q8")
    browser.find_element(By.ID, "file").send_keys(str(fake))
    notice = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#notice.show"))
    assert "not a picture" in notice.text
    assert browser.find_element(By.ID, "drop").is_displayed()
