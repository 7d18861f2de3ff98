"""The README's Python examples run as written and its links point at files that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("code", re.findall(r"```python\n(.*?)```", README, flags=re.S))
def test_readme_python_blocks_run(code, capsys):
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_readme_links_exist():
    links = [t for t in re.findall(r"\]\(([^)#]+)", README) if "://" not in t]
    assert links
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, missing
