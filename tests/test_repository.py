"""The README's promises: its Python block runs, and CI runs its test command verbatim."""

import os
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    """The README's second set-up command ends with the test command .ci/run runs."""
    commands = re.findall(r"^    (pip install .*)$", README, flags=re.MULTILINE)
    assert len(commands) >= 2 and "uniq-quant demo" in commands[0]
    test_command = commands[1].split("&&")[-1].strip()
    assert test_command == "python -m pytest -q"
    assert f"\n{test_command}\n" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_block_runs(tmp_path: Path) -> None:
    """The life-cycle example in the README runs as written (with a two-batch loader)."""
    block = re.search(r"```python\n(.*?)```", README, flags=re.DOTALL).group(1)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {"loader": loader, "print": lambda *a: None}
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    model, same = namespace["model"], namespace["same"]
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), same(x))
