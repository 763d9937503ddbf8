"""Screenshots of every web page, on seeded synthetic data, for docs/SCREENSHOTS.md.

    make screenshots        # or: .venv/bin/python docs/screenshots/make_screenshots.py [--out DIR]

A throw-away data home (temporary directory) gets the web tests' seed (researchers, stewards
of three holders, submitted requests, a small research zone), the airlock's record-level
release with a permit (``tests/access/outputs_support.airlock_world``), two output checkers and
a request returned for changes. The real app then runs under uvicorn on a loopback port
(``tests/browser/browser_support.serve``) and Chromium (/usr/bin/chromium, through
Playwright) signs in as each user and saves each page as ``<nn>-<page>.png``.

Only synthetic data is on the pages. Tokens are typed into the login form after its screenshot
is taken, and no page shows a token or a cookie; the script checks each page's text for every
token it issued before it saves the picture, and stops if one is there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
for helpers in ("tests/browser", "tests/web", "tests/access"):
    sys.path.insert(0, str(REPO_ROOT / helpers))

from browser_support import CHROMIUM, CHROMIUM_ARGS, ExternalRequests, serve  # noqa: E402

OUT = REPO_ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1200, "height": 800}
MAX_HEIGHT = (
    4200  # pixels of a long page kept in its picture (from the top; the steward's request page is longest)
)
SQL = "SELECT diabetes_type, count(*) AS visits FROM register_visit GROUP BY diabetes_type ORDER BY diabetes_type"
CONTEXT = "Visits by diabetes type: every cell holds more than a hundred visits; no pseudonyms, no dates."


class Camera:
    """Saves numbered full-page pictures, after checking that no issued token is on the page."""

    def __init__(self, out: Path, secrets: list[str]) -> None:
        self.out, self.secrets, self.n, self.saved = out, secrets, 0, []

    def __call__(self, page, name: str) -> None:
        html = page.content()
        if any(s in html for s in self.secrets):
            raise SystemExit(f"a token is on the page {name!r}: no screenshot taken")
        self.n += 1
        path = self.out / f"{self.n:02d}-{name}.png"
        height = page.evaluate("document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": min(height, MAX_HEIGHT)}
        page.screenshot(path=str(path), full_page=True, clip=clip)
        self.saved.append(path.name)
        print(f"  {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")


def seed_world(settings) -> dict:
    """Users, requests and a record-level release in the data home; returns the tokens and ids."""
    from outputs_support import airlock_world
    from webtest_helpers import request_fields, seed, write_research_zone

    from governance import service
    from governance.store import session_scope

    world = seed(settings.governance_url)
    write_research_zone(settings.research_db("ndr"))
    airlock = airlock_world(settings.governance_url, settings.releases_dir, release_id="rel-2026-000001")
    tokens = {**world.tokens, **airlock.tokens}
    with session_scope(settings.governance_url) as s:
        service.set_organisation(s, name="alice", organisation="Uppsala universitet", actor="admin")
        returned = service.file_request(
            s, applicant="alice", **request_fields(project="Blood pressure in type 2 diabetes", members=[])
        )
        service.submit_request(s, request_id=returned, actor="alice")
    with session_scope(settings.governance_url) as s:
        service.decide(
            s,
            request_id=returned,
            holder_id="ndr",
            reviewer="s-ndr",
            decision="return",
            justification="Please narrow the period to the years the ethics approval covers (2018-2024).",
        )
    return {
        "tokens": tokens,
        "request_id": world.request_id,
        "returned_id": returned,
        "release_id": airlock.release_id,
        "permit_id": airlock.permit_id,
    }


def login(browser, url: str, token: str, recorder: ExternalRequests, lang: str = "en"):
    ctx = browser.new_context(locale="en-GB" if lang == "en" else "sv-SE", viewport=VIEWPORT)
    recorder.watch(ctx)
    page = ctx.new_page()
    page.goto(f"{url}/web/login?lang={lang}")
    page.locator("#token").fill(token)
    page.locator("#token").press("Enter")
    page.wait_for_load_state()
    return ctx, page


def take_all(url: str, w: dict, shoot: Camera, recorder: ExternalRequests) -> None:
    from playwright.sync_api import sync_playwright

    tokens = w["tokens"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            public = browser.new_context(locale="sv-SE", viewport=VIEWPORT)
            recorder.watch(public)
            page = public.new_page()
            page.goto(f"{url}/web/login?lang=sv")
            shoot(page, "login-sv")
            page.goto(f"{url}/web/transparency?lang=en")
            shoot(page, "public-register")
            page.goto(f"{url}/docs")
            page.wait_for_load_state("networkidle")
            shoot(page, "api-docs")
            public.close()

            # A steward: the review queue and a request with the decision aids.
            ctx, page = login(browser, url, tokens["s-ndr"], recorder)
            shoot(page, "steward-queue")
            page.goto(f"{url}/web/requests/{w['request_id']}")
            shoot(page, "steward-request")
            page.goto(f"{url}/web/prom")
            shoot(page, "prom-key-figures")
            page.goto(f"{url}/web/permits/{w['permit_id']}/output-exceptions")
            shoot(page, "output-exceptions")
            ctx.close()

            # A researcher: own page, the application form, the workspace, outputs.
            ctx, page = login(browser, url, tokens["alice"], recorder)
            shoot(page, "researcher")
            page.goto(f"{url}/web/apply")
            shoot(page, "application-new")
            page.locator("#project").fill("HbA1c after 2015")
            page.locator("#ethics_ref").fill("2024-1234")
            page.locator("#save-draft").click()
            page.wait_for_load_state()
            shoot(page, "application-problems")
            page.goto(f"{url}/web/apply/{w['returned_id']}")
            shoot(page, "application-returned")
            page.goto(f"{url}/web/workspace")
            shoot(page, "workspace-releases")
            page.goto(f"{url}/web/workspace/{w['release_id']}")
            page.locator("#sql").fill(SQL)
            page.locator("#run-query").click()
            page.wait_for_load_state()
            shoot(page, "workspace-result")
            page.goto(f"{url}/web/releases/{w['release_id']}/codebook")
            shoot(page, "codebook")
            page.goto(f"{url}/web/workspace/{w['release_id']}")
            page.locator("#sql").fill(SQL)
            page.locator("#run-query").click()
            page.wait_for_load_state()
            page.locator("#format").select_option("csv")
            page.locator("#title").fill("Visits by diabetes type")
            page.locator("#context").fill(CONTEXT)
            page.locator("#request-output").click()
            page.wait_for_url(f"{url}/web/outputs/*")
            output = page.url
            shoot(page, "output-requested")
            page.goto(f"{url}/web/outputs")
            shoot(page, "outputs-mine")
            ctx.close()

            # An output checker: the queue and the decision page with the rows under check.
            ctx, page = login(browser, url, tokens["oc-1"], recorder)
            shoot(page, "checking-queue")
            page.goto(output)
            shoot(page, "output-check")
            page.goto(f"{url}/web/requests/999999")
            shoot(page, "not-found")
            ctx.close()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNGs go (default {OUT})")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hdp-screens-") as tmp:
        os.environ["HDP_HOME"] = str(Path(tmp) / "home")
        os.environ["HDP_KEK_DIR"] = str(Path(tmp) / "kek")  # the script and the app share one KEK
        os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
        for name in ("HDP_GOVERNANCE_URL", "HDP_ENV"):
            os.environ.pop(name, None)
        from governance.store import dispose_all
        from hdp.settings import get_settings
        from privacy import audit_key

        get_settings.cache_clear()
        Path(os.environ["HDP_HOME"]).mkdir()
        audit_key.configure()
        settings = get_settings()
        world = seed_world(settings)
        for old in args.out.glob("[0-9][0-9]-*.png"):
            old.unlink()
        shoot = Camera(args.out, list(world["tokens"].values()))
        recorder = ExternalRequests()
        print(f"screenshots into {args.out}:")
        with serve(Path(os.environ["HDP_HOME"])) as url:
            take_all(url, world, shoot, recorder)
        dispose_all()
    if recorder.external:
        print(f"pages requested URLs outside the machine: {sorted(set(recorder.external))}", file=sys.stderr)
        return 1
    print(f"{len(shoot.saved)} pages, {len(recorder.seen)} requests, none outside the machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
