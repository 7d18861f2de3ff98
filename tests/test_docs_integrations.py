"""The examples of docs/integrations/ run as written (each page's blocks in order, in one
namespace, in a fresh folder). A block that is a script (``if __name__ == "__main__":``,
e.g. one that starts processes) is written to a file and run with the interpreter."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations"
NEEDS = {"lightning.md": ["lightning"], "huggingface.md": ["transformers", "accelerate"]}
SLOW = {"compile.md", "fsdp.md", "huggingface.md", "lightning.md"}


def _pages():
    for page in sorted(DOCS.glob("*.md")):
        marks = [pytest.mark.slow] if page.name in SLOW else []
        yield pytest.param(page, id=page.stem, marks=marks)


@pytest.mark.parametrize("page", list(_pages()))
def test_page_examples_run(page, tmp_path, monkeypatch):
    for module in NEEDS.get(page.name, []):
        pytest.importorskip(module)
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks, f"{page.name} has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_example"}
    for i, code in enumerate(blocks):
        if 'if __name__ == "__main__":' in code:
            script = tmp_path / f"{page.stem}_{i}.py"
            script.write_text(code)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
            out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                 cwd=tmp_path, env=env, timeout=600)
            assert out.returncode == 0, f"{page.name} block {i}:\n{out.stdout}\n{out.stderr}"
        else:
            exec(compile(code, f"{page.name} block {i}", "exec"), namespace)


def test_every_page_is_linked_from_the_index():
    index = (DOCS.parent / "index.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if f"integrations/{p.name}" not in index]
    assert not missing, missing
