"""MkDocs hooks (mkdocs.yml `hooks:`): README.md is a page of the site, readme.md, outside the nav.

Its links into docs/ (`docs/first-run.md`, `docs/figures/loss.png`) are made relative to the site's root, so
`mkdocs build --strict` checks them as it checks the pages' own: a page or heading renamed under a README link
fails the build.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parent / "README.md"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    text = README.read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "readme.md", content=text))
    return files
