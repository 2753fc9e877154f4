"""The docs cite files that exist, and docs/results/ names files by what they measure.

Fast and JAX-free: it reads README.md and every Markdown file under docs/ (docs/results/'s
reports included), collects each `docs/...` path and each relative Markdown link, and checks
that the repository holds it. A path written after a commit (`eb293c8:docs/results/...`, as
`git show` takes it) names a file that git keeps, not the tree, and is skipped, as are
placeholders (`docs/results/<report>/`, `RUN`, globs).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# A docs/ path not preceded by a character that would make it part of something else: a
# longer path (`/`), a word, or a git object name (`<commit>:docs/...`).
DOC_PATH = re.compile(r"(?<![\w/.:-])docs/[A-Za-z0-9_./-]+")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLACEHOLDER = ("*", "<", "RUN", "{")
TRAILING = ".,;:)'\"`"
RUN_SUFFIX = re.compile(r"_s(1[0-9]|2[0-9])(?![0-9])")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def cited_paths(md: Path) -> list[tuple[str, Path]]:
    """(as written, resolved path) for every docs/ path and relative link in one file."""
    text = md.read_text(encoding="utf-8")
    found = []
    for match in DOC_PATH.finditer(text):
        written = match.group(0).rstrip(TRAILING)
        following = text[match.end():match.end() + 1]
        if written and following not in PLACEHOLDER and not any(p in written for p in PLACEHOLDER):
            found.append((written, ROOT / written))
    for match in LINK.finditer(text):
        target = match.group(1).split("#")[0].rstrip(TRAILING)
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or any(p in target for p in PLACEHOLDER):
            continue  # a URL (http:, mailto:), an anchor in the same page, or a placeholder
        found.append((target, (md.parent / target) if not target.startswith("/") else ROOT / target.lstrip("/")))
    return found


def test_every_file_a_doc_cites_exists():
    missing = []
    checked = 0
    for md in markdown_files():
        for written, path in cited_paths(md):
            checked += 1
            if not path.exists():
                missing.append(f"{md.relative_to(ROOT)}: {written}")
    assert checked > 50, "the scan found almost nothing: has the docs layout changed?"
    assert not missing, "cited but not in the repository:\n" + "\n".join(sorted(set(missing)))


def test_results_files_have_no_run_number_suffixes():
    suffixed = [str(p.relative_to(ROOT)) for p in (DOCS / "results").rglob("*") if RUN_SUFFIX.search(p.name)]
    assert not suffixed, "run-number suffixes under docs/results/ (name files by what they measure):\n" + "\n".join(
        sorted(suffixed)
    )


def test_the_scan_skips_git_objects_and_placeholders_but_not_plain_paths(tmp_path):
    md = tmp_path / "x.md"
    md.write_text(
        "see `docs/results.md`, `git show eb293c8:docs/results/old_s11.txt`, "
        "`docs/results/<report>/results.jsonl`, [plot](a.png) and [site](https://example.org).\n"
    )
    written = [w for w, _ in cited_paths(md)]
    assert written == ["docs/results.md", "a.png"]
    assert RUN_SUFFIX.search("smollm2_report_s20") and RUN_SUFFIX.search("train_log_s11.jsonl")
    assert not RUN_SUFFIX.search("spec_decode_t0.json") and not RUN_SUFFIX.search("policy-v5")
