"""The README's config-group table lists every option of every group in configs/, and nothing
that is not there; its links into docs/ point at files and headings that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def group_table() -> dict[str, set[str]]:
    section = README.split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = set(re.findall(r"`([\w/]+)`", cells[1]))
    return rows


def test_every_option_of_every_group_is_listed():
    table = group_table()
    groups = {p.name for p in (ROOT / "configs").iterdir() if p.is_dir() and p.name != "hydra"}
    groups.add("hydra/launcher")
    assert set(table) == groups
    for group in groups:
        options = {p.stem for p in (ROOT / "configs" / group).glob("*.yaml")}
        listed = table[group] - {"default"} if group == "local" else table[group]
        assert options <= listed, f"{group}: not in the README table: {options - listed}"
        assert listed - options <= {"pip"}, (
            f"{group}: listed but not in configs/: {listed - options}"
        )


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_into_docs_resolve():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target, anchor in re.findall(r"\]\(((?:docs/)?[\w-]+\.md)?#?([\w-]*)\)", text):
            path = (doc.parent / target) if target else doc
            if target and not target.startswith("docs/") and doc.parent == ROOT:
                continue  # a link to a file outside docs/
            assert path.is_file(), f"{doc.name}: link to missing {target}"
            if anchor:
                headings = {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
                assert anchor in headings, f"{doc.name}: no heading #{anchor} in {path.name}"


def test_readme_is_short_and_tells_no_development_history():
    assert len(README.splitlines()) < 400
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text()
        assert not re.search(r"\bissue \d+|\bsession \d|\bcommit [0-9a-f]{7}", text, re.I), doc.name
