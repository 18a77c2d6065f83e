"""The README's Python example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["rec"].shape == (4, 255, 255)
    assert namespace["sparse"].shape == (4, 255, 255)
    assert abs(namespace["center"] - 127.5) < 1.0
