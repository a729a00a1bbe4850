"""The page at ``/`` in a real headless Chromium against a real service (see conftest.py).

Only t-SNE and UMAP are warmed in the fixture's workers, so these tests use them; clusterplot
(the lane warms it) is checked for its blobs.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import missing_part

if importlib.util.find_spec("playwright") is None:
    missing_part("playwright is not installed: pip install playwright")

from playwright.sync_api import expect

pytestmark = pytest.mark.browser

DATASET = "smollm2-135m-instruct-layer7-c50-fc37d2fe"
SEED_ID = "000ff918bc98"
SEED_TEXT = "Students were outraged over the administration's new"
STORM_ID = "009226523ca0"
STORM_TEXT = "After the storm passed, the whole village smelled of"
N_GUESSES = 40


def view_url(*projectors: str, preamble: str = SEED_ID, seed: int | str | None = None) -> str:
    url = f"/?dataset={DATASET}&preamble={preamble}&projectors={','.join(projectors)}"
    return url if seed is None else f"{url}&seed={seed}"


def api_json(page: Any, projector: str, preamble: str = SEED_ID, **query: Any) -> Any:
    extra = "".join(f"&{key}={value}" for key, value in query.items())
    return page.request.get(f"/projections/{DATASET}/{projector}?preamble_id={preamble}{extra}")


def panel(page: Any, projector: str) -> Any:
    return page.locator(f'section.panel[data-projector="{projector}"]')


def expect_plot(page: Any, projector: str) -> Any:
    guesses = panel(page, projector).locator("svg.projection text.guess")
    expect(guesses).to_have_count(N_GUESSES)
    return guesses


def test_page_loads_without_console_errors(page: Any, console_errors: list[str]) -> None:
    page.goto("/")
    expect(page.get_by_label("Dataset")).to_have_value(DATASET)
    expect(page.locator("#preamble-list button")).to_have_count(8)
    expect(page.get_by_label("Search preambles")).to_be_visible()
    # With no view in the URL: the first dataset and the default projectors, written back.
    expect(page.get_by_role("checkbox", name="t-SNE")).to_be_checked()
    expect(page.get_by_role("checkbox", name="UMAP")).to_be_checked()
    expect(page.get_by_role("checkbox", name="TriMAP")).not_to_be_checked()
    expect(page.locator("#view-hint")).to_have_text("Pick a preamble to see its guesses projected.")
    assert f"dataset={DATASET}" in page.url
    page.wait_for_load_state("networkidle")
    assert console_errors == []


def test_search_finds_the_seed_preamble_and_pages(page: Any) -> None:
    page.goto("/")
    search = page.get_by_label("Search preambles")
    items = page.locator("#preamble-list button")
    info = page.locator("#page-info")
    expect(info).to_have_text("1–8 of 10")
    search.fill("OUTRAGED over")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text(SEED_TEXT)
    expect(items.first).to_contain_text("40 guesses")
    expect(info).to_have_text("1–1 of 1")

    search.fill("")
    expect(info).to_have_text("1–8 of 10")
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    page.get_by_role("button", name="Next").click()
    expect(info).to_have_text("9–10 of 10")
    expect(items).to_have_count(2)
    expect(page.get_by_role("button", name="Next")).to_be_disabled()

    search.fill("zebra crossing")
    expect(page.locator("#preamble-status")).to_have_text("No preamble contains “zebra crossing”.")
    expect(items).to_have_count(0)


# Importing tol_colors 2.2 (for the server's palette) calls matplotlib's Colormap.set_bad, which
# matplotlib 3.11 flags as pending deprecation; not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:The set_bad function will be deprecated:PendingDeprecationWarning"
)
def test_two_projectors_side_by_side(page: Any, console_errors: list[str], artifacts: Path) -> None:
    from clustviz.render import cluster_colors

    page.goto(f"/?dataset={DATASET}&projectors=")
    expect(page.locator("#view-hint")).to_have_text("Pick a preamble to see its guesses projected.")
    page.get_by_label("Search preambles").fill("outraged")
    page.get_by_role("button", name=re.compile("Students were outraged")).click()
    expect(page.locator("#preamble-title")).to_contain_text(SEED_TEXT)
    expect(page.locator("#view-hint")).to_have_text("Choose at least one projector.")
    page.get_by_role("checkbox", name="t-SNE").check()
    page.get_by_role("checkbox", name="UMAP").check()
    expect(page.locator("section.panel")).to_have_count(2)
    assert page.url.endswith(f"?dataset={DATASET}&preamble={SEED_ID}&projectors=tsne,umap")

    boxes = []
    for projector in ("tsne", "umap"):
        guesses = expect_plot(page, projector)
        data = api_json(page, projector).json()
        # One <text> per guess, in the API's order, coloured as the server's plots colour them.
        assert guesses.all_text_contents() == [p["guess"] for p in data["points"]]
        palette = cluster_colors(data["n_clusters"])
        fills = guesses.evaluate_all("nodes => nodes.map(n => n.getAttribute('fill'))")
        assert fills == [palette[p["label"]].upper() for p in data["points"]]
        # Parameters used and quality metrics next to the plot.
        box = panel(page, projector)
        knn = f"{data['metrics']['knn_preservation']:.3f}"
        expect(box.locator('[data-metric="knn_preservation"]')).to_have_text(knn)
        expect(box.locator('[data-metric="trustworthiness"]')).to_have_text(
            re.compile(r"^0\.\d{3}$")
        )
        expect(box.locator("details.params summary")).to_have_text(
            f"Parameters used ({len(data['params'])})"
        )
        expect(box.locator(".summary")).to_contain_text("40 guesses · 12 clusters · seed 1871")
        boxes.append(box.bounding_box())
        # The download links serve the server's own rendering.
        png = page.request.get(box.get_by_role("link", name="PNG").get_attribute("href"))
        assert png.ok and png.headers["content-type"] == "image/png"
        assert png.body()[:8] == b"\x89PNG\r\n\x1a\n"

    # Side by side: same row, tSNE on the left.
    assert (
        abs(boxes[0]["y"] - boxes[1]["y"]) < 1
        and boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]
    )
    page.screenshot(path=str(artifacts / "screenshot.png"), full_page=True)
    assert console_errors == []


def test_hover_shows_guess_details(page: Any) -> None:
    page.goto(view_url("tsne", "umap"))
    expect_plot(page, "umap")
    guesses = expect_plot(page, "tsne")
    point = api_json(page, "tsne").json()["points"][-1]
    tooltip = panel(page, "tsne").locator(".tooltip")
    expect(tooltip).to_be_hidden()
    guesses.last.hover()  # the last label is drawn on top of any it overlaps
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(point["guess"])
    expect(tooltip).to_contain_text(f"cluster {point['cluster_id']}")
    expect(tooltip).to_contain_text(f"logit {point['logit']:.2f}")
    # The same guess stands out in the other panel too, for comparing projectors.
    expect(panel(page, "umap").locator("text.guess.hit")).to_have_text(point["guess"])
    page.mouse.move(1, 1)
    expect(tooltip).to_be_hidden()
    # Keyboard users get the same details on focus.
    guesses.first.focus()
    expect(tooltip).to_contain_text(api_json(page, "tsne").json()["points"][0]["guess"])


def test_clusterplot_draws_blobs_in_cluster_colours(page: Any, artifacts: Path) -> None:
    response = api_json(page, "clusterplot")
    assert response.ok, response.text()
    page.goto(view_url("clusterplot"))
    data = response.json()
    expect_plot(page, "clusterplot")
    polygons = [
        (h["cluster_id"], poly) for h in data["hulls"] for poly in h["polygons"] if len(poly) >= 3
    ]
    assert polygons, "the demo preamble should have at least one hull"
    blobs = panel(page, "clusterplot").locator("path.blob")
    expect(blobs).to_have_count(len(polygons))
    text_fill = {p["cluster_id"]: None for p in data["points"]}
    for node in panel(page, "clusterplot").locator("text.guess").all():
        text_fill[int(node.get_attribute("data-cluster"))] = node.get_attribute("fill")
    for blob in blobs.all():
        assert blob.get_attribute("fill") == text_fill[int(blob.get_attribute("data-cluster"))]
    assert blobs.first.evaluate("n => getComputedStyle(n).fillOpacity") == "0.2"
    expect(panel(page, "clusterplot").locator('[data-metric="overlap"]')).to_contain_text("→")
    panel(page, "clusterplot").locator("text.guess").last.hover()
    expect(panel(page, "clusterplot").locator(".tooltip")).to_be_visible()
    page.screenshot(path=str(artifacts / "screenshot-clusterplot.png"), full_page=True)


@pytest.mark.parametrize(
    ("url", "where", "code"),
    [
        (view_url("tsne", "nope"), 'section.panel[data-projector="nope"]', "unknown_projector"),
        (view_url("tsne", seed=-1), 'section.panel[data-projector="tsne"]', "invalid_request"),
        (
            view_url("tsne", preamble="ffffffffffff"),
            'section.panel[data-projector="tsne"]',
            "preamble_not_found",
        ),
        ("/?dataset=no-such-dataset&projectors=tsne", "#preamble-status", "dataset_not_found"),
    ],
    ids=["unknown-projector", "bad-seed", "unknown-preamble", "unknown-dataset"],
)
def test_api_errors_are_shown_plainly(page: Any, url: str, where: str, code: str) -> None:
    page.goto(url)
    alert = page.locator(where).get_by_role("alert")
    expect(alert).to_contain_text(code)
    shown = alert.text_content()
    # The API's own detail, word for word.
    query = url.split("?", 1)[1]
    params = dict(part.split("=", 1) for part in query.split("&"))
    if code == "dataset_not_found":
        detail = page.request.get(f"/datasets/{params['dataset']}/preambles").json()["detail"]
    else:
        projector = where.split('"')[1]
        seed = {"seed": params["seed"]} if "seed" in params else {}
        detail = api_json(page, projector, params["preamble"], **seed).json()["detail"]
    assert detail in shown
    if code == "unknown_projector":
        expect_plot(page, "tsne")  # the other panel is unaffected
        nope = page.get_by_role("checkbox", name="nope")
        expect(nope).to_be_checked()
        nope.uncheck()
        expect(nope).to_be_focused()  # the control a keyboard user toggled keeps the focus
        expect(page.locator("section.panel")).to_have_count(1)
        assert "nope" not in page.url


def test_url_restores_the_view(page: Any, new_page: Any) -> None:
    page.goto(f"/?dataset={DATASET}")
    page.get_by_label("Search preambles").fill("storm")
    page.get_by_role("button", name=re.compile("After the storm")).click()
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Seed").press("Enter")
    expect(panel(page, "tsne").locator(".summary")).to_contain_text("seed 7")
    expect_plot(page, "umap")
    url = page.url
    assert f"preamble={STORM_ID}" in url and "projectors=tsne,umap" in url and "seed=7" in url

    fresh = new_page()
    fresh.goto(url)
    expect(fresh.locator("#preamble-title")).to_contain_text(STORM_TEXT)
    expect(fresh.locator("section.panel")).to_have_count(2)
    assert fresh.locator("section.panel").evaluate_all(
        "nodes => nodes.map(n => n.dataset.projector)"
    ) == ["tsne", "umap"]
    for projector in ("tsne", "umap"):
        guesses = expect_plot(fresh, projector)
        expect(panel(fresh, projector).locator(".summary")).to_contain_text("seed 7")
        assert guesses.all_text_contents() == expect_plot(page, projector).all_text_contents()
    expect(fresh.get_by_label("Seed")).to_have_value("7")
    expect(fresh.locator(f'#preamble-list button[data-id="{STORM_ID}"]')).to_have_attribute(
        "aria-pressed", "true"
    )


def test_back_and_forward_buttons(page: Any) -> None:
    page.goto(view_url("tsne"))
    expect(page.locator("#preamble-title")).to_contain_text(SEED_TEXT)
    expect_plot(page, "tsne")
    page.get_by_role("button", name=re.compile("After the storm")).click()
    expect(page.locator("#preamble-title")).to_contain_text(STORM_TEXT)
    expect_plot(page, "tsne")
    page.get_by_role("checkbox", name="UMAP").check()
    expect_plot(page, "umap")

    page.go_back()
    expect(page.locator("section.panel")).to_have_count(1)
    expect(page.get_by_role("checkbox", name="UMAP")).not_to_be_checked()
    expect(page.locator("#preamble-title")).to_contain_text(STORM_TEXT)
    page.go_back()
    expect(page.locator("#preamble-title")).to_contain_text(SEED_TEXT)
    # Views seen before come back at once, from memory: no "computing…" on the way.
    assert page.locator(".computing").count() == 0
    assert panel(page, "tsne").locator("text.guess").count() == N_GUESSES
    expect(page.locator(f'#preamble-list button[data-id="{SEED_ID}"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    page.go_forward()
    page.go_forward()
    expect(page.locator("#preamble-title")).to_contain_text(STORM_TEXT)
    expect(page.locator("section.panel")).to_have_count(2)
    assert page.locator(".computing").count() == 0
    assert page.url.endswith(f"preamble={STORM_ID}&projectors=tsne,umap")


def batch_job_id(page: Any) -> str:
    match = re.search(r"[?&]batch=([^&]+)", page.url)
    assert match, f"no batch id in {page.url}"
    return match[1]


def test_batch_over_all_preambles(
    page: Any, console_errors: list[str], artifacts: Path, tmp_path: Path
) -> None:
    import polars as pl

    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"/?dataset={DATASET}&projectors=umap")
    section = page.get_by_role("region", name="Batch")
    run = section.get_by_role("button", name="Run batch over all preambles")
    page.get_by_role("checkbox", name="UMAP").uncheck()
    expect(run).to_be_disabled()  # no projector checked
    expect(section).to_contain_text("Check at least one projector")
    page.get_by_role("checkbox", name="t-SNE").check()
    expect(section).to_contain_text("Runs t-SNE on every preamble")
    run.click()

    # Progress from the event stream, up to 10 of 10 (one item per preamble).
    state = section.locator("#batch-state")
    expect(state).to_have_text("done")
    bar = section.get_by_role("progressbar", name="Batch progress")
    expect(bar).to_have_attribute("aria-valuenow", "10")
    expect(bar).to_have_attribute("aria-valuemax", "10")
    expect(bar).to_have_attribute("aria-valuetext", "10 of 10 items, 0 failed")
    expect(section.locator("#batch-counts")).to_have_text("10 / 10 items · 0 failed")
    expect(section.locator("#batch-elapsed")).to_have_text(re.compile(r"^· \d+\.\d s$"))
    expect(section.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(run).to_be_enabled()
    job = batch_job_id(page)
    assert page.url.endswith(f"?dataset={DATASET}&projectors=tsne&batch={job}")
    assert any(url.endswith(f"/batches/{job}/events") for url in requests)
    status = page.request.get(f"/batches/{job}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", 10, 0)
    assert status["spec"]["projectors"] == ["tsne"]

    # The results download as files; the Parquet one holds every preamble's points.
    for name, fmt in (("Parquet", "parquet"), ("Arrow", "arrow"), ("JSON", "json")):
        link = section.get_by_role("link", name=name, exact=True)
        assert link.get_attribute("href") == f"/batches/{job}/results?format={fmt}"
    with page.expect_download() as download_info:
        section.get_by_role("link", name="Parquet").click()
    download = download_info.value
    assert download.suggested_filename == f"batch-{job}.parquet"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.stat().st_size > 0
    frame = pl.read_parquet(saved)
    assert frame["preamble"].n_unique() == 10 and set(frame["projector"]) == {"tsne"}
    assert SEED_TEXT in set(frame["preamble"].str.slice(0, len(SEED_TEXT)))
    json_rows = page.request.get(f"/batches/{job}/results?format=json")
    assert json_rows.ok and len(json_rows.body()) > 0
    section.screenshot(path=str(artifacts / "screenshot-batch.png"))

    # A reload re-attaches: the finished job's status again, without opening the event stream.
    requests.clear()
    page.reload()
    expect(state).to_have_text("done")
    expect(section.locator("#batch-id")).to_have_text(job)
    expect(bar).to_have_attribute("aria-valuenow", "10")
    expect(section.get_by_role("link", name="Parquet")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert not any("/events" in url for url in requests)

    # Deleting the finished job removes it from the page, the URL and the service.
    section.get_by_role("button", name="Delete job").click()
    expect(section.locator("#batch-job")).to_be_hidden()
    expect(run).to_be_focused()
    assert "batch=" not in page.url
    assert page.request.get(f"/batches/{job}").status == 404
    assert console_errors == []


def test_a_running_batch_is_cancelled_from_the_page(page: Any, console_errors: list[str]) -> None:
    """Cancel stops the job (POST /batches/{id}/cancel): the page shows it cancelled with the
    items finished so far, and the job stays (its results export) until it is deleted."""

    def slow(route: Any) -> None:  # the fixture's batches end too fast to be cancelled
        if route.request.method != "POST":
            route.continue_()
            return
        body = json.loads(route.request.post_data)
        body |= {"params": {"tsne": {"max_iter": 5000}}, "seed": 4242}
        route.continue_(post_data=json.dumps(body))

    page.route("**/batches", slow)
    page.goto(f"/?dataset={DATASET}&projectors=tsne")
    section = page.get_by_role("region", name="Batch")
    section.get_by_role("button", name="Run batch over all preambles").click()
    cancel = section.get_by_role("button", name="Cancel")
    expect(cancel).to_be_visible()
    with page.expect_request(lambda request: request.url.endswith("/cancel")) as sent:
        cancel.click()
    assert sent.value.method == "POST"
    expect(section.locator("#batch-state")).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    job = batch_job_id(page)
    status = page.request.get(f"/batches/{job}").json()
    assert status["state"] == "cancelled" and status["done"] < 10
    assert page.request.get(f"/batches/{job}/results?format=json").ok
    assert page.request.delete(f"/batches/{job}").json()["state"] == "deleted"
    assert console_errors == []


def test_batch_errors_are_shown_plainly(page: Any) -> None:
    # Refused up front by the API: its detail, word for word.
    refused = page.request.post(
        "/batches", data={"dataset": DATASET, "preambles": "all", "projectors": ["nope"]}
    )
    assert refused.status == 422
    page.goto(f"/?dataset={DATASET}&projectors=nope")
    page.get_by_role("button", name="Run batch over all preambles").click()
    alert = page.locator("#batch-error").get_by_role("alert")
    expect(alert).to_contain_text(f"422 {refused.json()['code']}")
    assert refused.json()["detail"] in alert.text_content()
    assert "batch=" not in page.url

    # A job the service does not know (deleted, or another server's).
    page.goto(f"/?dataset={DATASET}&projectors=tsne&batch=no-such-job")
    expect(page.locator("#batch-error").get_by_role("alert")).to_contain_text("404 job_not_found")
    expect(page.locator("#batch-job")).to_be_hidden()  # no empty progress bar under it

    # Failed items are listed with their reasons (a finished job with failures, stubbed).
    errors = [
        {
            "preamble": "Tiny <b>preamble</b>",
            "projector": "umap",
            "code": "too_few_points",
            "detail": "3 points; umap needs at least 5",
        },
        {"preamble": SEED_TEXT, "projector": "tsne", "code": None, "detail": None},
    ]
    stub = {
        "id": "stubbed",
        "state": "done",
        "spec": {},
        "total": 4,
        "done": 2,
        "failed": 2,
        "pending": 0,
        "created": 0.0,
        "started": 1.0,
        "finished": 3.5,
        "elapsed_s": 2.5,
        "errors": errors,
        "links": {},
    }
    page.route("**/batches/stubbed", lambda route: route.fulfill(json=stub))
    page.goto(f"/?dataset={DATASET}&projectors=tsne&batch=stubbed")
    section = page.get_by_role("region", name="Batch")
    expect(section.locator("#batch-counts")).to_have_text("4 / 4 items · 2 failed")
    expect(section.locator("#batch-elapsed")).to_have_text("· 2.5 s")
    failed = section.get_by_role("list", name="Failed items (2)").get_by_role("listitem")
    expect(failed).to_have_count(2)
    expect(failed.first).to_contain_text("Tiny <b>preamble</b>")  # text, not markup
    expect(failed.first).to_contain_text("umap")
    expect(failed.first).to_contain_text("too_few_points 3 points; umap needs at least 5")
    expect(failed.nth(1)).to_contain_text(SEED_TEXT)


def test_batch_events_resume_after_a_dropped_connection(page: Any) -> None:
    """A dropped event stream is reconnected by the browser itself (the same EventSource, which
    sends Last-Event-ID: the server side of that is tested in tests/service/test_events.py):
    the page does not close the stream on that transient error, and does not count an event at
    or below the last id it had.

    The job is the test's own: its status and its event stream are answered here, and each
    stream ends after a few events, as a dropped connection would. (Chromium adds the
    Last-Event-ID header below where Playwright intercepts, so it is not asserted here.)"""
    import json

    job = "feedfacecafe0001"
    status = {
        "id": job,
        "state": "running",
        "spec": {"dataset": DATASET, "projectors": ["tsne"], "params": {}, "seed": 1871},
        "total": 10,
        "done": 0,
        "failed": 0,
        "pending": 10,
        "created": 1.0,
        "started": 1.0,
        "finished": None,
        "elapsed_s": 1.0,
        "errors": [],
        "links": {},
    }

    def at(done: int, state: str = "running") -> dict[str, Any]:
        status.update(done=done, pending=10 - done, state=state)
        return dict(status)

    def event(event_id: int, name: str, data: dict[str, Any]) -> str:
        return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n"

    streams = [  # what each connection gets, then the connection ends
        lambda: event(0, "progress", at(0)) + event(3, "progress", at(3)),
        # an event at or below the last id is dropped (here a stale count: it would go back)
        lambda: event(2, "progress", at(1)) + event(5, "progress", at(5)),
        lambda: event(11, "end", at(10, "done")),
    ]
    connections = 0

    def answer_events(route: Any) -> None:
        nonlocal connections
        connections += 1
        body = "retry: 50\n\n" + streams[min(connections, len(streams)) - 1]()
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    def answer_status(route: Any) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(status))

    page.route(f"**/batches/{job}/events", answer_events)
    page.route(f"**/batches/{job}", answer_status)
    page.add_init_script(
        """
        window.__sources = [];  // [readyState at each error] per EventSource the page opens
        const Native = window.EventSource;
        window.EventSource = class extends Native {
          constructor(...args) {
            super(...args);
            const errors = [];
            window.__sources.push(errors);
            this.addEventListener("error", () => errors.push(this.readyState));
          }
        };
        window.__progress = [];  // every value the progress bar shows
        new MutationObserver((records) => {
          for (const r of records)
            if (r.target.id === "batch-progress")
              window.__progress.push(Number(r.target.getAttribute("aria-valuenow")));
        }).observe(document, { subtree: true, attributeFilter: ["aria-valuenow"] });
        """
    )
    page.goto(f"/?dataset={DATASET}&projectors=tsne&batch={job}")
    section = page.get_by_role("region", name="Batch")
    expect(section.locator("#batch-state")).to_have_text("done")
    bar = section.get_by_role("progressbar", name="Batch progress")
    expect(bar).to_have_attribute("aria-valuenow", "10")
    assert connections == 3
    # one EventSource throughout: each drop left it reconnecting (CONNECTING = 0), not closed
    assert page.evaluate("window.__sources") == [[0, 0]]
    shown = page.evaluate("window.__progress")
    assert 1 not in shown and shown == sorted(shown), shown  # nothing counted twice or back
    assert {3, 5, 10} <= set(shown), shown


# ---- the global map view -----------------------------------------------------------------
# openTSNE with few iterations: a fit of the 400-row fixture in a fraction of a second once
# numba's on-disk cache is warm (tests/service/test_maps.py says why not umap-learn here).
MAP_PARAMS = '{"early_exaggeration_iter": 50, "n_iter": 100}'
MAP_TIMEOUT_MS = 180_000  # the first fit on a machine compiles openTSNE's numba functions

# Where the canvas has ink: the CSS-pixel centres of a few non-white pixels, found in the page.
INKED_PIXELS = """
(canvas) => {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const data = ctx.getImageData(0, 0, width, height).data;
  const scale = canvas.getBoundingClientRect().width / width;
  const found = [];
  let inked = 0;
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = [data[4 * i], data[4 * i + 1], data[4 * i + 2]];
    if (r < 250 || g < 250 || b < 250) {
      inked++;
      const [x, y] = [i % width, Math.floor(i / width)];
      if (inked % 97 === 0) found.push([(x + 0.5) * scale, (y + 0.5) * scale]);
    }
  }
  return { inked, found };
}
"""


def build_map(page: Any, url: str) -> tuple[str, list[int]]:
    """Build an openTSNE map of the fixture from the page at ``url``; return its id and every
    value the progress bar showed on the way."""
    page.add_init_script(
        """
        window.__mapProgress = [];
        new MutationObserver((records) => {
          for (const r of records)
            if (r.target.id === "map-progress")
              window.__mapProgress.push(Number(r.target.getAttribute("aria-valuenow")));
        }).observe(document, { subtree: true, attributeFilter: ["aria-valuenow"] });
        """
    )
    page.goto(url)
    section = page.get_by_role("region", name="Global map")
    section.get_by_label("Method", exact=True).select_option("opentsne")
    section.get_by_label("Fit on").select_option("points")
    section.get_by_label("Method parameters (JSON)").fill(MAP_PARAMS)
    section.get_by_role("button", name="Build map").click()
    expect(section.locator("#map-state")).to_have_text("done", timeout=MAP_TIMEOUT_MS)
    match = re.search(r"[?&]map=([^&]+)", page.url)
    assert match, f"no map id in {page.url}"
    return match[1], page.evaluate("window.__mapProgress")


def map_canvas(page: Any) -> Any:
    canvas = page.locator("#map-view canvas.map-canvas")
    expect(canvas).to_be_visible()
    expect(page.locator("#map-summary")).to_contain_text("400 guesses · 10 preambles")
    return canvas


def test_map_view_builds_a_map_and_opens_a_preamble_from_it(
    page: Any, console_errors: list[str], artifacts: Path
) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    map_id, progress = build_map(page, f"/?dataset={DATASET}&projectors=tsne")
    section = page.get_by_role("region", name="Global map")
    bar = section.get_by_role("progressbar", name="Map progress")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    assert progress and progress[-1] == 100 and progress == sorted(progress), progress
    status = page.request.get(f"/maps/{map_id}").json()
    assert status["state"] == "done" and status["spec"]["plan"]["method"] == "opentsne"
    assert page.url.endswith(f"?dataset={DATASET}&projectors=tsne&map={map_id}")
    # the map is listed for the dataset, and its points came once, as columns
    expect(section.get_by_label("Map", exact=True)).to_have_value(map_id)
    assert [url for url in requests if "/points" in url] == [
        f"{page.url.split('/?')[0]}/maps/{map_id}/points?format=columns"
    ]

    canvas = map_canvas(page)
    expect(page.locator("#map-legend")).to_contain_text("Every guess, coloured by cluster")
    ink = canvas.evaluate(INKED_PIXELS)
    assert ink["inked"] > 400, ink["inked"]  # every point is a few pixels

    # Hover: a point's guess, preamble and cluster; a click opens its preamble.
    columns = page.request.get(f"/maps/{map_id}/points?format=columns").json()
    tooltip = page.locator("#map-canvas-box .tooltip")
    expect(tooltip).to_be_hidden()
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for x, y in ink["found"]:
        page.mouse.move(box["x"] + x, box["y"] + y)
        if tooltip.is_visible():
            break
    expect(tooltip).to_be_visible()
    guess, preamble, cluster = tooltip.locator("span, strong").all_text_contents()
    assert guess in columns["guess"]
    text = preamble.removesuffix(" …")
    assert text in columns["preambles"]
    rows = [i for i, k in enumerate(columns["preamble_index"]) if columns["preambles"][k] == text]
    assert (guess, int(cluster.removeprefix("cluster "))) in {
        (columns["guess"][i], columns["cluster_id"][i]) for i in rows
    }
    page.mouse.down()
    page.mouse.up()
    picked = columns["preamble_ids"][columns["preambles"].index(text)]
    expect(page.locator("#preamble-title")).to_contain_text(text)
    assert f"preamble={picked}" in page.url
    expect_plot(page, "tsne")
    expect(page.locator("#map-legend")).to_contain_text(f"Labelled: the 40 guesses of “{text}")
    # its guesses are drawn over the dimmed rest: the picture changed
    assert canvas.evaluate(INKED_PIXELS) != ink
    page.screenshot(path=str(artifacts / "screenshot-map.png"), full_page=True)
    assert console_errors == []


def test_map_view_aligns_the_panels_to_the_map(page: Any, console_errors: list[str]) -> None:
    map_id, _ = build_map(page, view_url("tsne", "umap"))
    map_canvas(page)
    for projector in ("tsne", "umap"):
        expect_plot(page, projector)
        expect(panel(page, projector).locator(".aligned")).to_be_hidden()
    page.get_by_label("Align the panels to the map").check()
    assert page.url.endswith(f"&map={map_id}&align=1")
    for projector in ("tsne", "umap"):
        box = panel(page, projector)
        expect(box).to_have_attribute("data-aligned-to", map_id)
        expect(box.locator(".aligned")).to_have_text(f"aligned to map {map_id[:8]}")
        guesses = expect_plot(page, projector)
        aligned = page.request.post(
            "/projections",
            data={
                "dataset": DATASET,
                "preamble_id": SEED_ID,
                "projector": projector,
                "align": {"map": map_id},
            },
        ).json()
        assert aligned["aligned_to"]["map"] == map_id
        assert guesses.all_text_contents() == [p["guess"] for p in aligned["points"]]
        png = box.get_by_role("link", name="Map PNG").get_attribute("href")
        assert png == f"/maps/{map_id}/plot.png?preamble_id={SEED_ID}"
    # Off again: the panels as before, unaligned.
    page.get_by_label("Align the panels to the map").uncheck()
    assert "align=1" not in page.url
    expect(panel(page, "tsne").locator(".aligned")).to_be_hidden()
    expect(panel(page, "tsne")).not_to_have_attribute("data-aligned-to", map_id)
    assert console_errors == []


def test_a_done_map_is_shown_at_once_from_the_url(page: Any, new_page: Any) -> None:
    map_id, _ = build_map(page, f"/?dataset={DATASET}&projectors=")
    fresh = new_page()
    requests: list[str] = []
    fresh.on("request", lambda request: requests.append(request.url))
    fresh.goto(f"/?dataset={DATASET}&preamble={STORM_ID}&projectors=&map={map_id}")
    map_canvas(fresh)
    expect(fresh.locator("#map-state")).to_have_text("done")
    expect(fresh.locator("#map-legend")).to_contain_text(f"the 40 guesses of “{STORM_TEXT}")
    assert not any("/events" in url for url in requests)  # done: nothing to follow
    # The keyboard zooms and resets (the picture changes, then comes back).
    canvas = fresh.locator("#map-view canvas.map-canvas")
    before_zoom = canvas.evaluate(INKED_PIXELS)
    canvas.focus()
    fresh.keyboard.press("+")
    fresh.wait_for_function(
        f"(before) => ({INKED_PIXELS})(document.querySelector('canvas.map-canvas')).inked"
        " !== before",
        arg=before_zoom["inked"],
    )
    fresh.keyboard.press("0")
    fresh.wait_for_function(
        f"(before) => ({INKED_PIXELS})(document.querySelector('canvas.map-canvas')).inked"
        " === before",
        arg=before_zoom["inked"],
    )
    # Building the same map again answers at once (200, the same id): no second fit.
    before = fresh.request.get(f"/maps/{map_id}").json()["finished"]
    section = fresh.get_by_role("region", name="Global map")
    section.get_by_label("Method", exact=True).select_option("opentsne")
    section.get_by_label("Fit on").select_option("points")
    section.get_by_label("Method parameters (JSON)").fill(MAP_PARAMS)
    with fresh.expect_response("**/maps") as posted:
        section.get_by_role("button", name="Build map").click()
    assert posted.value.status == 200 and posted.value.json()["id"] == map_id
    expect(section.locator("#map-state")).to_have_text("done")
    assert fresh.request.get(f"/maps/{map_id}").json()["finished"] == before
    # A bad parameter is the service's 422, shown plainly.
    section.get_by_label("Method parameters (JSON)").fill('{"perplexity": -1}')
    section.get_by_role("button", name="Build map").click()
    expect(section.locator("#map-error").get_by_role("alert")).to_contain_text("422 invalid_params")


def test_a_failed_map_is_shown_plainly(page: Any) -> None:
    """A map whose fit failed (stubbed: a real failure is tests/service/test_maps.py's): its
    error in the map box, and panels asked to align to it say they cannot, instead of waiting."""
    import json

    failed = {
        "id": "failedmap0001",
        "state": "failed",
        "stage": "fit",
        "progress": 0.4,
        "updates": 3,
        "spec": {"dataset": DATASET, "request": {"method": "umap", "fit_on": "points"}},
        "created": 1.0,
        "started": 1.0,
        "finished": 2.0,
        "elapsed_s": 1.0,
        "error": {"code": "map_failed", "detail": "umap-learn raised <b>ValueError</b>"},
        "summary": None,
        "links": {},
    }
    page.route(
        "**/maps/failedmap0001",
        lambda route: route.fulfill(content_type="application/json", body=json.dumps(failed)),
    )
    page.goto(f"{view_url('tsne')}&map=failedmap0001&align=1")
    section = page.get_by_role("region", name="Global map")
    expect(section.locator("#map-state")).to_have_text("failed")
    alert = section.locator("#map-error").get_by_role("alert")
    expect(alert).to_contain_text("map_failed umap-learn raised <b>ValueError</b>")  # as text
    expect(page.locator("#map-summary")).to_have_text(
        "This map failed; the Global map box says why."
    )
    box = panel(page, "tsne").get_by_role("alert")
    expect(box).to_contain_text("map failedma is failed: the panels cannot be aligned to it")
    expect(page.locator("#map-canvas-box canvas")).to_have_count(0)
