"""Screenshots of `facesynth serve`'s page for docs/web/, taken in headless Chromium (the system's).

Starts the real server on a free loopback port, opens the page on fixed seeds, and saves the whole
page and each panel: the face, style mixing, interpolation, a photo projected and mixed (scikit-image's
public-domain astronaut, --project-steps optimisation steps: a minute or two on a CPU), and the
animate panel (live with the bundled talking head or --animate-ckpt: the photo animated by the bundled clip;
without a model, the notice visitors would see).  --animate-only takes that panel alone.

    .venv/bin/python scripts/web_screenshots.py [--out docs/web] [--project-steps 150] [--animate-ckpt RUN]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

from facesynth.web import ServerSettings
from facesynth.web.headless import launch
from facesynth.web.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[1]
SEED, MIX, WALK = 4, (23, 29), (4, 23)  # faces that show the bundled model at its best (from seeds 0-63)
ALL_LOADED = """() => [...document.images].filter(i => i.getAttribute('src') && i.offsetParent)
                                   .every(i => i.complete && i.naturalWidth > 0)"""


def astronaut_jpeg(folder: Path) -> Path:
    from skimage.data import astronaut

    path = folder / "astronaut.jpg"
    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG", quality=92)
    path.write_bytes(buf.getvalue())
    return path


def animate_panel(page, photo: Path, out: Path) -> None:
    """The animate panel with the photo animated by the bundled clip (or the notice, when animation is off)."""
    page.set_input_files("#animate-file", str(photo))
    if page.locator("#animate-off").is_hidden():
        page.click("#animate-go")
        page.wait_for_selector("#animate-result:not([hidden])", timeout=15 * 60_000)
        page.wait_for_function("() => document.getElementById('animate-video').readyState >= 2")
        page.evaluate("() => { const v = document.getElementById('animate-video'); v.pause(); v.currentTime = 1.5; }")
        page.wait_for_timeout(500)
    page.locator("#animate").screenshot(path=str(out / "animate.png"))


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "web"))
    ap.add_argument("--project-steps", type=int, default=150)
    ap.add_argument("--animate-ckpt", default=None)
    ap.add_argument("--dark", action="store_true", help="also the page in the dark colour scheme")
    ap.add_argument("--animate-only", action="store_true", help="only the animate panel, its video made")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(animate_ckpt=args.animate_ckpt, project_steps=args.project_steps)

    with tempfile.TemporaryDirectory() as tmp, BackgroundServer(settings) as url, sync_playwright() as p:
        photo = astronaut_jpeg(Path(tmp))
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/?seed={SEED}&psi=0.7")
        page.wait_for_selector("#mix-groups .chip")  # the page has set itself up (after /api/info)
        # The top bar stays put while scrolling; in a still it would cover whatever the panel scrolled under.
        page.add_style_tag(content=".topbar { position: static; }")
        page.fill("#mix-source", str(MIX[0]))
        page.fill("#mix-style", str(MIX[1]))
        page.dispatch_event("#mix-style", "change")
        page.click("#mix-groups .chip:text('middle')")
        page.fill("#interp-a", str(WALK[0]))
        page.fill("#interp-b", str(WALK[1]))
        page.click("#interp-go")
        page.wait_for_function(ALL_LOADED)
        if args.animate_only:
            animate_panel(page, photo, out)
            browser.close()
            return
        page.locator("#face").screenshot(path=str(out / "face.png"))
        page.locator("#mixing").screenshot(path=str(out / "mixing.png"))
        page.locator("#interpolation").screenshot(path=str(out / "interpolation.png"))

        page.set_input_files("#project-file", str(photo))
        page.click("#project-go")
        page.wait_for_selector("#project-results:not([hidden])", timeout=15 * 60_000)
        page.wait_for_function(ALL_LOADED)
        page.locator("#photo").screenshot(path=str(out / "photo.png"))

        animate_panel(page, photo, out)

        face = photo.with_name("face.png")  # a face as a visitor downloads it, dropped on "Was this made here?"
        face.write_bytes(page.request.get(f"{url}/api/face?seed={SEED}&psi=0.7&size=256").body())
        page.set_input_files("#detect-file", str(face))
        page.wait_for_selector("#detect-result:not([hidden])")
        page.locator("#detect").screenshot(path=str(out / "detect.png"))
        page.screenshot(path=str(out / "page.png"), full_page=True)

        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        phone.goto(f"{url}/?seed={SEED}&psi=0.7")
        phone.wait_for_function(ALL_LOADED)
        phone.screenshot(path=str(out / "phone.png"))
        phone.add_style_tag(content=".topbar { position: static; }")
        phone.locator("#interpolation").screenshot(path=str(out / "phone-strip.png"))  # the strip wrapped to rows
        if args.dark:
            dark = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="dark")
            dark.goto(f"{url}/?seed={SEED}&psi=0.7")
            dark.wait_for_function(ALL_LOADED)
            dark.screenshot(path=str(out / "dark.png"))
        browser.close()
    for f in sorted(out.glob("*.png")):
        print(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)


if __name__ == "__main__":
    main()
