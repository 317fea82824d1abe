"""Reports: the PDF holds the database's counts, versions follow labels and model, the
renderer only reads the report's own files and is stopped on timeout."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from chromowatch.errors import ReportError
from chromowatch.records import CLASS_COLOURS, UNLABELLED_COLOUR, hex_to_rgb
from chromowatch.reports.assets import BOX_COLOURS_BGR
from chromowatch.reports.data import (
    ModelInfo,
    confusion_from_metrics,
    control_for,
    current_model_info,
)
from chromowatch.reports.pdf import FetchRefused, allowed_path, render_pdf
from chromowatch.reports.publish import on_sample_complete
from chromowatch.reports.render import file_stem, write_report, write_summary
from chromowatch.settings import Settings
from chromowatch.store import ReportVersionExists, SampleImage, Store
from tests.reports.fixtures import add_image, make_sample

CONFUSION: list[list[float]] = [[97, 3, 0], [2, 85, 13], [0, 2, 98]]
MODEL = ModelInfo("ikemoto2023", "2025-01-01", 30, {"accuracy": 0.9333}, CONFUSION, "f1")


def _settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    return Settings(paths={"data_dir": str(tmp_path / "data")}, **sections)  # type: ignore[arg-type]


@pytest.fixture()
def filled(tmp_path: Path) -> Iterator[tuple[Settings, Store]]:
    settings = _settings(tmp_path)
    store = Store.open(settings.paths.db)
    make_sample(store, tmp_path, "ddx11", ["AABBCCCBBA", "ABCBBCCAAB", "AAAABBBCCC"] * 2,
                flags={3: "touching"})
    add_image(store, tmp_path, "ddx11", ["ABC"], image_no=99, outside="CC")
    make_sample(store, tmp_path, "wt", ["AAAAAAAABA", "AAAAAABAAC"] * 3)
    store.record_failure(path="/in/broken.png", sample="ddx11", error="truncated file",
                         size=10, sha256=None)
    yield settings, store
    store.close()


def _pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def test_pdf_holds_the_same_counts_as_the_database(filled: tuple[Settings, Store],
                                                   tmp_path: Path) -> None:
    settings, store = filled
    files = write_report(settings, store, "ddx11", out_dir=tmp_path / "r", control="wt",
                         model=MODEL)
    assert files.pdf is not None and files.html is not None
    text = _pdf_text(files.pdf)
    counts = store.sample_counts("ddx11")[0]
    line = re.sub(r"\s+", " ", text)
    assert (f"Scored: {counts.scored} chromosomes in 7 metaphases — A {counts.counts['A']}, "
            f"B {counts.counts['B']}, C {counts.counts['C']};") in line
    assert f"left out {counts.excluded} of {counts.crops} crops" in line
    assert "flagged: touching 6" in line
    assert "chi-square" in line and "Mann-Whitney" in line
    assert "broken.png" in line and "truncated file" in line  # the image list with status
    assert "Corrected with the holdout confusion matrix of ikemoto2023" in line
    assert len(PdfReader(files.pdf).pages) >= 3
    html = files.html.read_text()
    assert "<svg" in html and html.count('src="assets/crop-') >= 10
    assert 'src="assets/spread-' in html
    bc = counts.counts["B"] + counts.counts["C"]
    assert re.search(rf"^\s+B\+C\s+{bc}\s+{100 * bc / counts.scored:.1f}%", files.summary_text,
                     re.MULTILINE)


def test_no_confusion_matrix_is_said_plainly(filled: tuple[Settings, Store],
                                             tmp_path: Path) -> None:
    settings, store = filled
    bare = ModelInfo("demo", "", 1, {}, None, "x")
    files = write_report(settings, store, "ddx11", out_dir=tmp_path / "a", formats=["html"],
                         model=bare)
    assert files.pdf is None and files.html is not None
    html = files.html.read_text()
    assert "has no holdout confusion matrix" in html and "corrected</th>" not in html
    none = write_report(settings, store, "ddx11", out_dir=tmp_path / "b", formats=["html"])
    assert "No model is installed" in none.html.read_text()  # type: ignore[union-attr]


def test_names_are_escaped_and_file_names_safe(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with Store.open(settings.paths.db) as store:
        evil = '<script>alert(1)</script>/../x'
        make_sample(store, tmp_path, evil, ["ABC"])
        files = write_report(settings, store, evil, out_dir=tmp_path / "r", formats=["html"])
    assert files.html is not None and files.html.parent == tmp_path / "r"
    assert "/" not in file_stem(evil) and file_stem("ddx11") == "ddx11"
    html = files.html.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_fetcher_serves_only_the_reports_own_files(tmp_path: Path) -> None:
    root = tmp_path / "report"
    (root / "assets").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    png = (Path(__file__).parent / "fixtures.py")  # any file: only the path matters
    assert allowed_path((root / "assets" / "a.png").as_uri(), root) == root / "assets" / "a.png"
    for url in (outside.as_uri(), (root / ".." / "secret.png").as_uri(),
                "http://127.0.0.1:9/x.png", "https://example.org/x.png", png.as_uri()):
        with pytest.raises(FetchRefused):
            allowed_path(url, root)


def test_pdf_renderer_leaves_out_images_from_elsewhere(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    root = tmp_path / "report"
    root.mkdir()
    dot = np.zeros((8, 8, 3), np.uint8)
    cv2.imwrite(str(root / "inside.png"), dot)
    cv2.imwrite(str(tmp_path / "outside.png"), dot)
    html = root / "r.html"
    outside = (tmp_path / "outside.png").as_uri()
    html.write_text(f'<p>x</p><img src="inside.png"><img src="{outside}">'
                    '<img src="http://127.0.0.1:9/remote.png">')
    render_pdf(html, root / "r.pdf", root=root, timeout_s=60)
    assert len(PdfReader(root / "r.pdf").pages[0].images) == 1


def test_renderer_timeout_is_a_report_error(tmp_path: Path) -> None:
    (tmp_path / "r.html").write_text("<p>x</p>")
    with pytest.raises(ReportError, match="took longer than"):
        render_pdf(tmp_path / "r.html", tmp_path / "r.pdf", root=tmp_path, timeout_s=0.05)
    assert not (tmp_path / "r.pdf").exists()


def test_a_clone_in_the_working_directory_does_not_shadow_the_renderer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon started beside a clone: `python -m chromowatch.reports.pdf` imported the
    clone's folder from the working directory (issue 16)."""
    (tmp_path / "chromowatch" / "reports").mkdir(parents=True)
    (tmp_path / "chromowatch" / "__init__.py").write_text("raise ImportError('the clone')\n")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "report"
    root.mkdir()
    (root / "r.html").write_text("<p>x</p>")
    render_pdf(root / "r.html", root / "r.pdf", root=root, timeout_s=60)
    assert (root / "r.pdf").read_bytes().startswith(b"%PDF")


def test_versions_follow_labels_and_nothing_else(filled: tuple[Settings, Store]) -> None:
    settings, store = filled
    settings = settings.model_copy(update={"report": settings.report.model_copy(
        update={"formats": ["html"]})})
    on_sample_complete(settings, store, "ddx11")
    first = store.latest_report("ddx11")
    assert first is not None and first.version == 1 and first.pdf_path is None
    on_sample_complete(settings, store, "ddx11")  # nothing changed: no new version
    assert store.latest_report("ddx11").version == 1  # type: ignore[union-attr]
    crop = store.sample_crop_rows("ddx11")[0]
    store.add_label(crop.id, "C", source="review", who="ana")
    on_sample_complete(settings, store, "ddx11")
    second = store.latest_report("ddx11")
    assert second is not None and second.version == 2 and second.html_path is not None
    html = Path(second.html_path).read_text()
    assert "version 2" in html and Path(second.html_path).parent.name == "v2"
    assert "reviewed by ana 1" in html  # the report says who reviewed
    assert store.outbox_rows() == []  # mail is off by default


def test_control_patterns_and_summary(filled: tuple[Settings, Store], tmp_path: Path) -> None:
    settings, store = filled
    s = _settings(tmp_path, report={"controls": {"wt": "nothing", "ddx*": "wt", "*": "wt"}})
    assert control_for(s, "ddx11") == "wt"
    assert control_for(s, "wt") == "nothing"
    assert control_for(_settings(tmp_path, report={"controls": {"*": "wt"}}), "wt") is None
    files = write_summary(settings, store, ["ddx11", "wt"], out_dir=tmp_path / "s",
                          model=MODEL)
    assert files.pdf is not None
    text = re.sub(r"\s+", " ", _pdf_text(files.pdf))
    for row in store.sample_counts():
        assert row.sample in text and str(row.scored) in text


def test_model_info_from_the_installed_manifest(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert current_model_info(settings) is None
    models = settings.paths.models
    (models / "ensembles").mkdir(parents=True)
    manifest = {"format": "chromowatch-ensemble", "format_version": 1, "name": "m1",
                "created": "2025-02-03", "enhancement": "ikemoto2023",
                "members": [{"name": "b", "file": "bundles/b.pt", "sha256": "0" * 64}],
                "metrics": {"accuracy": 0.91, "holdout": {"confusion_matrix": CONFUSION}}}
    (models / "ensembles" / "m1.json").write_text(json.dumps(manifest))
    (models / "current.json").write_text(json.dumps({"name": "m1"}))
    info = current_model_info(settings)
    assert info is not None and info.name == "m1" and info.members == 1
    assert info.confusion == CONFUSION and info.metrics == {"accuracy": 0.91}
    assert confusion_from_metrics({"confusion": [[1, 2], [3, 4]]}) is None


def test_sample_with_only_duplicate_files_gets_no_report(filled: tuple[Settings, Store]) -> None:
    settings, store = filled
    on_sample_complete(settings, store, "copies-of-ddx11")  # never stored: its files were dups
    assert store.latest_report("copies-of-ddx11") is None


def test_a_version_recorded_twice_is_said_by_the_store(filled: tuple[Settings, Store]) -> None:
    _, store = filled
    kwargs = {"sample": "ddx11", "version": 1, "fingerprint": "f", "model": None,
              "control": None, "html_path": None, "pdf_path": None, "mail": None}
    store.record_report(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ReportVersionExists):
        store.record_report(**kwargs)  # type: ignore[arg-type]
    assert store.latest_report("ddx11").fingerprint == "f"  # type: ignore[union-attr]


def test_a_version_another_process_recorded_first_is_left_to_it(
        filled: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    settings, store = filled
    settings = settings.model_copy(update={"report": settings.report.model_copy(
        update={"formats": ["html"]})})
    store.record_report(sample="ddx11", version=1, fingerprint="theirs", model=None,
                        control=None, html_path=None, pdf_path=None, mail=None)
    monkeypatch.setattr(store, "latest_report", lambda sample: None)  # it read before they wrote
    on_sample_complete(settings, store, "ddx11")
    assert "was recorded by another process" in caplog.text
    monkeypatch.undo()
    assert store.latest_report("ddx11").fingerprint == "theirs"  # type: ignore[union-attr]


def test_thumbnail_boxes_use_the_one_palette() -> None:
    for c in ("A", "B", "C"):
        assert BOX_COLOURS_BGR[c] == tuple(reversed(hex_to_rgb(CLASS_COLOURS[c])))
    assert BOX_COLOURS_BGR["A"] == (178, 114, 0)  # the colours the report always had
    assert BOX_COLOURS_BGR[None] == hex_to_rgb(UNLABELLED_COLOUR) == (138, 138, 138)


DEMO_VERSION = "demo-synthetic-0123456789ab"


def _install_manifest(settings: Settings, name: str, metrics: dict[str, object] | None) -> None:
    """An ensemble manifest alone (no weights): what the report reads of a model."""
    folder = settings.paths.models / "ensembles"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "chromowatch-ensemble", "format_version": 1, "name": name,
                "created": "2025-02-03", "enhancement": "ikemoto2023",
                "members": [{"name": "b", "file": "bundles/b.pt", "sha256": "0" * 64}],
                "metrics": metrics}
    (folder / f"{name}.json").write_text(json.dumps(manifest))


def test_a_demonstration_model_is_said_on_page_one_and_in_the_mail(tmp_path: Path) -> None:
    from chromowatch.reports.mail import compose

    settings = _settings(tmp_path, mail={"enabled": True, "host": "localhost",
                                         "sender": "cw@lab.example",
                                         "recipients": {"*": ["ana@lab.example"]}})
    _install_manifest(settings, "demo-synthetic", {"demonstration": True})
    (settings.paths.models / "current.json").write_text(json.dumps({"name": "demo-synthetic"}))
    with Store.open(settings.paths.db) as store:
        make_sample(store, tmp_path, "synthetic-01", ["AABBCCCBBA"] * 3,
                    model_version=DEMO_VERSION)
        files = write_report(settings, store, "synthetic-01", out_dir=tmp_path / "r",
                             model=current_model_info(settings))
    assert files.pdf is not None
    first = re.sub(r"\s+", " ", PdfReader(files.pdf).pages[0].extract_text())
    assert "DEMONSTRATION" in first and "not evidence" in first
    assert "B is often called C" not in _pdf_text(files.pdf)
    mail = compose(settings, sample="synthetic-01", version=1, report=files)
    assert mail is not None and "DEMONSTRATION" in mail.subject
    assert "DEMONSTRATION" in files.summary_text and "DEMONSTRATION" in files.summary_html


def test_a_real_model_has_no_demonstration_banner(filled: tuple[Settings, Store],
                                                  tmp_path: Path) -> None:
    settings, store = filled
    files = write_report(settings, store, "ddx11", out_dir=tmp_path / "r", formats=["html"],
                         model=MODEL)
    assert files.html is not None and "DEMONSTRATION" not in files.html.read_text()
    assert "DEMONSTRATION" not in files.summary_text


def test_the_report_names_the_model_that_made_the_numbers(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _install_manifest(settings, "x-model", None)
    _install_manifest(settings, "y-model", {"confusion_matrix": CONFUSION})
    (settings.paths.models / "current.json").write_text(json.dumps({"name": "y-model"}))
    with Store.open(settings.paths.db) as store:
        make_sample(store, tmp_path, "s", ["AABBCCCBBA"] * 3, model_version="x-model-0123456789ab")
        files = write_report(settings, store, "s", out_dir=tmp_path / "r", formats=["html"],
                             model=current_model_info(settings))
    html = files.html.read_text()  # type: ignore[union-attr]
    header = html.split('id="scored-line"')[0]
    assert "x-model" in header and "y-model" not in header
    box = html.split('class="warnings model-warning"')[1].split("</div>")[0]
    assert "no known error rate" in box
    assert "Corrected with" not in html  # not with y-model's matrix: y made none of it


def test_several_models_behind_a_sample_are_said_prominently(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _install_manifest(settings, "x-model", {"confusion_matrix": CONFUSION})
    with Store.open(settings.paths.db) as store:
        add_image(store, tmp_path, "s", ["AABBC"], image_no=0, model_version="x-model-0123456789ab")
        add_image(store, tmp_path, "s", ["AABBC"], image_no=1, model_version="z-model-0123456789ab")
        files = write_report(settings, store, "s", out_dir=tmp_path / "r", formats=["html"])
    html = files.html.read_text()  # type: ignore[union-attr]
    box = html.split('class="warnings model-warning"')[1].split("</div>")[0]
    assert "2 models" in box and "x-model" in box and "z-model" in box


def _image(image_id: int, path: str) -> SampleImage:
    return SampleImage(image_id, path, "done", None, 400, 300, 1, None, None, 5)


def test_images_are_named_by_file_and_duplicates_told_apart() -> None:
    from chromowatch.reports.render import image_names

    names = image_names([_image(1, "/in/a/1.png"), _image(2, "/in/b/1.png"),
                         _image(3, "/in/a/2.png"), _image(4, "/x/a/2.png")])
    assert names[3] != names[4] and names[1] == "a/1.png" and names[2] == "b/1.png"
    assert "2.png" in names[3] and "2.png" in names[4]
    assert image_names([_image(7, "/in/spread.tif")]) == {7: "spread.tif"}


def test_metaphase_table_shows_file_names(filled: tuple[Settings, Store],
                                          tmp_path: Path) -> None:
    settings, store = filled
    files = write_report(settings, store, "ddx11", out_dir=tmp_path / "r", formats=["html"],
                         model=MODEL)
    table = files.html.read_text().split("<h2>Metaphases</h2>")[1]  # type: ignore[union-attr]
    assert ">99.png</td>" in table and ">0.png</td>" in table


def test_spread_thumbnails_number_the_boxes_as_the_gallery(tmp_path: Path) -> None:
    import numpy as np

    from chromowatch.reports.assets import _thumbnail
    from chromowatch.reports.data import CropView

    picture = np.full((300, 400, 3), 255, np.uint8)
    view = CropView(417, 1, "x.png", (150, 150, 30, 40), "A", None, "A", None, (0.9, 0.05, 0.05))
    region = (0, 0, 400, 300)
    thumb = _thumbnail(picture, [view], region)
    scale = thumb.shape[1] / 400
    x, y = int(150 * scale), int(150 * scale)
    label = thumb[max(0, y - 16):y - 2, x:x + 40]  # just above the box: where its number is
    assert (label < 128).any(), "no number drawn by the box"


@pytest.mark.parametrize("rows", [9, 10, 11])
def test_the_last_page_holds_no_orphaned_table_row(tmp_path: Path, rows: int) -> None:
    """The metaphase table ends the report; with 10 rows its last one used to stand alone
    on page 5 (the others on page 4)."""
    settings = _settings(tmp_path)
    with Store.open(settings.paths.db) as store:
        add_image(store, tmp_path, "long", ["AB"] * rows, image_no=1)
        files = write_report(settings, store, "long", out_dir=tmp_path / "r", formats=["pdf"])
    assert files.pdf is not None
    last = PdfReader(files.pdf).pages[-1].extract_text()
    on_last = re.findall(r"^\s*1\.png\s+\d+\s+\d+", last, re.MULTILINE)
    assert "Metaphases" in last or len(on_last) > 1, last


def test_the_report_shows_cross_sample_figures_beside_the_holdout(
        filled: tuple[Settings, Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This checkout's templates (an editable install elsewhere may map its own)."""
    from chromowatch.reports import render

    monkeypatch.setattr(render, "files", lambda _: Path(__file__).parents[2] / "templates")
    settings, store = filled
    metrics = {"holdout_accuracy": 0.762, "cross_sample_accuracy": 0.6123,
               "cross_sample_fraction_error_max": 0.171, "cross_sample_groups": 2}
    model = ModelInfo("trained-1", "2026-12-08", 4, metrics, CONFUSION, "f")
    html = write_report(settings, store, "ddx11", out_dir=tmp_path / "x", formats=["html"],
                        model=model).html.read_text()  # type: ignore[union-attr]
    assert "cross_sample_accuracy</td><td>0.6123" in html
    assert "scored on 2 whole samples or spreads left out of its training" in html
    plain = ModelInfo("trained-0", "2026-12-08", 4, {"holdout_accuracy": 0.762}, CONFUSION, "f")
    html = write_report(settings, store, "ddx11", out_dir=tmp_path / "y", formats=["html"],
                        model=plain).html.read_text()  # type: ignore[union-attr]
    assert "No cross-sample figures" in html
