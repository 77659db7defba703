"""Lay visdom's web assets from the npm registry, so `python -m visdom.server` starts offline.

visdom 0.2.4 downloads its JavaScript, CSS and fonts from CDNs the first time
its server starts (`visdom/server/build.py`), and crashes without internet.
The same files are published on the npm registry; this script fetches those
exact packages and versions with `npm pack`, copies each file to the name
build.py gives it under visdom's `static/` folder, and writes
`static/version.built`, which tells the server the download is done.

It also rewrites one line of visdom's page template: `static_url("../user/style.css")` reaches outside the
static root, which tornado 6.5 and later refuse (403 on every page), and trainkit needs a current tornado
(`tornado>=6.5.8` for its published advisories). The link becomes the path that visdom serves the file at,
under its base_url. The rewrite is checked against the line it replaces and is idempotent.

Run by `make install`; `python -m trainkit.sinks.visdom_assets [--check]`.
Idempotent: when every file is in place it returns at once, without npm.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from trainkit.store.files import write_text_atomic

MATHJAX = "mathjax@2.7.5"
MATHJAX_FILES = (
    "config/Safe.js",
    "config/TeX-AMS-MML_HTMLorMML.js",
    "extensions/Safe.js",
    "jax/output/SVG/fonts/TeX/fontdata.js",
    "jax/output/SVG/jax.js",
    "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
    "jax/output/SVG/config.js",
    "MathJax.js",
)
GLYPHS = "glyphicons-halflings-regular"
# visdom's page links `user/style.css` beside static/ for custom styles; visdom ships none, and a missing
# one is logged as an error on every page load.
USER_CSS = "../user/style.css"

TEMPLATE = "index.html"
TEMPLATE_ORIGINAL = 'href={{ static_url("../user/style.css") }}'
# visdom serves user/ at <base_url>/user/; the static prefix is <base_url>/static/
TEMPLATE_PATCHED = 'href="{{ handler.settings["static_url_prefix"][: -len("static/")] }}user/style.css"'

# (npm package@version, file inside the package, destination under visdom's static/), in build.py's order.
ASSETS: tuple[tuple[str, str, str], ...] = (
    ("jquery@3.1.1", "dist/jquery.min.js", "js/jquery.min.js"),
    ("bootstrap@3.3.7", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    ("react@16.2.0", "umd/react.production.min.js", "js/react-react.min.js"),
    ("react-dom@16.2.0", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    ("react-modal@3.1.10", "dist/react-modal.min.js", "js/react-modal.min.js"),
    ("plotly.js-dist-min@2.11.1", "plotly.min.js", "js/plotly-plotly.min.js"),  # = cdn.plot.ly/plotly-2.11.1.min.js
    ("sjcl@1.0.7", "sjcl.js", "js/sjcl.js"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
    ("d3@3.5.17", "d3.min.js", "js/d3.v3.min.js"),  # = d3js.org/d3.v3.min.js (the last v3)
    ("d3-selection-multi@1.0.1", "build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),
    ("save-svg-as-png@1.4.17", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    ("react-resizable@1.4.6", "css/styles.css", "css/react-resizable-styles.css"),
    ("react-grid-layout@0.16.3", "css/styles.css", "css/react-grid-layout-styles.css"),
    ("bootstrap@3.3.7", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    ("classnames@2.2.5", "index.js", "fonts/classnames"),
    ("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    *(
        ("bootstrap@3.3.7", f"dist/fonts/{GLYPHS}.{ext}", f"fonts/{GLYPHS}.{ext}")
        for ext in ("eot", "woff2", "woff", "ttf", "svg")
    ),
    ("bootstrap@3.3.7", f"dist/fonts/{GLYPHS}.svg", f"fonts/{GLYPHS}.svg#glyphicons_halflingsregular"),
    *((MATHJAX, f, f"js/mathjax/2.7.5/{f}") for f in MATHJAX_FILES),
)


def _package_dir() -> Path:
    # found without importing visdom: plots.py is the one module that imports it
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise SystemExit("visdom assets: the visdom package is not installed; run `make install`")
    return Path(spec.origin).resolve().parent


def static_dir() -> Path:
    return _package_dir() / "static"


def visdom_version() -> str:
    """What visdom writes in version.built: the text of its VERSION file."""
    version = _package_dir() / "VERSION"
    return version.read_text().strip() if version.is_file() else "no_version_file"


def missing(static: Path) -> list[str]:
    """Destinations not yet in place (and version.built, when it is stale)."""
    out = [dest for _, _, dest in ASSETS if not (static / dest).is_file()]
    if not (static / USER_CSS).is_file():
        out.append(USER_CSS)
    built = static / "version.built"
    if not built.is_file() or built.read_text().strip() != visdom_version():
        out.append("version.built")
    template = static / TEMPLATE
    if template.is_file() and TEMPLATE_PATCHED not in template.read_text(encoding="utf-8"):
        out.append(f"{TEMPLATE} (its user/style.css link, for tornado 6.5+)")
    return out


def patch_template(static: Path) -> bool:
    """Rewrite the page's user/style.css link; True when it was rewritten now, False when it already was."""
    template = static / TEMPLATE
    text = template.read_text(encoding="utf-8")
    if TEMPLATE_PATCHED in text:
        return False
    if text.count(TEMPLATE_ORIGINAL) != 1:
        raise SystemExit(
            f"visdom assets: {template} is not the page trainkit knows (no line with {TEMPLATE_ORIGINAL}); "
            "reinstall visdom==0.2.4 (make clean && make install)"
        )
    write_text_atomic(template, text.replace(TEMPLATE_ORIGINAL, TEMPLATE_PATCHED))
    return True


def install(static: Path | None = None, quiet: bool = False) -> int:
    """Fetch and lay every asset; returns how many files were written."""
    static = static or static_dir()
    todo = missing(static)
    if not todo:
        if not quiet:
            print(f"visdom assets: all {len(ASSETS)} files in place in {static}")
        return 0
    stale = "version.built" in todo  # a new visdom version: lay every file again
    patch_template(static)
    packages = sorted({pkg for pkg, _, dest in ASSETS if stale or dest in todo})
    written = _lay(static, packages) if packages else 0
    user_css = static / USER_CSS
    if not user_css.is_file():
        user_css.parent.mkdir(exist_ok=True)
        user_css.write_text("/* custom styles for the visdom page */\n")
    write_text_atomic(static / "version.built", visdom_version())
    if not quiet:
        print(f"visdom assets: wrote {written} files from the npm registry into {static}")
    return written


def _lay(static: Path, packages: list[str]) -> int:
    """`npm pack` the packages into a temporary folder and copy their files into place."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("visdom assets: npm not found; install Node.js and npm (Debian: apt-get install npm)")
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", "--silent", "--pack-destination", tmp, *packages],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"},
        )
        for pkg, member, dest in ASSETS:
            if pkg not in packages:
                continue
            with tarfile.open(Path(tmp) / _tarball_name(pkg)) as tar:
                source = tar.extractfile(f"package/{member}")
                if source is None:
                    raise SystemExit(f"visdom assets: {pkg} has no file {member}")
                target = static / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(source.read())
                os.replace(partial, target)
                written += 1
    return written


def _tarball_name(spec: str) -> str:
    name, _, version = spec.rpartition("@")
    return f"{name.replace('@', '').replace('/', '-')}-{version}.tgz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what is missing; exit 1 if anything is")
    args = parser.parse_args(argv)
    if args.check:
        todo = missing(static_dir())
        print("visdom assets: complete" if not todo else f"visdom assets: missing {', '.join(todo)}")
        return 1 if todo else 0
    install()
    return 0


if __name__ == "__main__":
    sys.exit(main())
