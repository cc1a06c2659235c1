"""The code of docs/plugin-guide.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).parents[2] / "docs" / "plugin-guide.md"


def python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_ten_line_plugin(tmp_path):
    namespace: dict = {}
    exec(compile(python_block("def auth_on_publish(username, topic)"), "guide", "exec"), namespace)
    check = namespace["auth_on_publish"]
    assert check(None, "x") is None
    assert check("s1", "sensors/s1/t") is True
    assert check("s1", "sensors/s2/t").reason.startswith("s1 may only publish")


async def test_end_to_end_example():
    namespace: dict = {}
    exec(compile(python_block("async def test_only_bob"), "guide", "exec"), namespace)
    await namespace["test_only_bob"]()
