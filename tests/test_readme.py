"""Every python and bash block of the README runs as written (issue 13 §2).

A block runs from a temporary folder in which ``models/`` is the repository's. A python block runs
in a fresh namespace, or in the previous python block's where its first line starts with
``# continues the block above``. A bash block runs in bash with ``onnxattr`` as
``python -m onnxattr``, stopping at the first command that fails; every command in it must be an
``onnxattr`` command. A block that cannot run here has ``<!-- not run: REASON -->`` on the line
just before it, and REASON must be one of :data:`ALLOWED`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: why a block may stay out of CI; anything else is a README that does not run
ALLOWED = ("installs packages", "runs the whole test suite", "placeholder file names", "needs a GPU",
           "needs the network", "minutes of benchmarking")
CONTINUES = "# continues the block above"
MARKER = re.compile(r"^<!-- not run: (.*) -->$")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the marker's reason, or None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


@dataclass
class Chain:
    """Python blocks that share one namespace, in order."""

    blocks: list[Block] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` (every language), with the not-run marker just before each."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        out.append(Block(i + 1, m.group(1), "\n".join(lines[i + 1 : end]) + "\n", marker and marker.group(1)))
        i = end + 1
    return out


ALL = blocks(README.read_text(encoding="utf-8"))
RUN = [b for b in ALL if b.lang in ("python", "bash") and b.not_run is None]


def chains(every: list[Block]) -> list[Chain]:
    """The python blocks that run, grouped into chains; a block that continues one that does not
    run cannot run either."""
    out: list[Chain] = []
    previous: Block | None = None
    for b in (b for b in every if b.lang == "python"):
        if b.not_run is None and b.code.startswith(CONTINUES):
            assert previous is not None and previous.not_run is None, \
                f"{b} continues the block above, but that block does not run"
            out[-1].blocks.append(b)
        elif b.not_run is None:
            out.append(Chain([b]))
        previous = b
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_marker_has_an_allowed_reason_and_a_block():
    lines = README.read_text(encoding="utf-8").splitlines()
    marked = {b.line - 1 for b in ALL if b.not_run is not None and b.lang in ("python", "bash")}
    for n, line in enumerate(lines, 1):
        m = MARKER.match(line.strip())
        if m:
            assert m.group(1) in ALLOWED, f"README.md:{n}: 'not run' reason {m.group(1)!r} is not one of {ALLOWED}"
            assert n in marked, f"README.md:{n}: the marker is not right before a python or bash block"
        else:
            assert not line.startswith("<!-- not run"), f"README.md:{n}: malformed marker {line!r}"


def test_the_readme_has_blocks_that_run():
    """So that the tests below cannot pass by finding nothing."""
    assert len(chains(ALL)) >= 2 and sum(b.lang == "bash" for b in RUN) >= 2
    for b in ALL:
        if not b.lang:
            code = [line for line in b.code.splitlines() if line.startswith(("onnxattr ", "import ", "from "))]
            assert not code, f"{b}: a block with code has no language, so it would not run: {code}"


@pytest.mark.parametrize("chain", chains(ALL), ids=lambda c: str(c.blocks[0]))
def test_python_blocks_run(chain, workdir):
    namespace: dict = {"__name__": "__readme__"}
    for b in chain.blocks:
        exec(compile(b.code, str(b), "exec"), namespace)  # noqa: S102 - the README's own code


def commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c.strip() for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "bash"], ids=str)
def test_bash_blocks_run(block, workdir):
    for c in commands(block.code):
        assert c.startswith("onnxattr "), f"{block}: only onnxattr commands run here, got {c!r}"
    script = 'onnxattr() { "$ONNXATTR_PYTHON" -m onnxattr "$@"; }\n' + block.code
    env = dict(os.environ, ONNXATTR_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{block} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def architecture(text: str) -> list[tuple[int, str, str]]:
    """(indent, entry, description) of each entry line of the Architecture section's listing, the
    description including its continuation lines."""
    section = re.search(r"^## Architecture\n.*?^```\n(.*?)^```", text, flags=re.S | re.M)
    assert section, "the README has no Architecture listing"
    out: list[tuple[int, str, str]] = []
    for line in section.group(1).splitlines():
        m = re.match(r"^( *)(\S+(?:, \S+)*)(?:\s{2,}(.*))?$", line)
        indent = len(line) - len(line.lstrip())
        if m and indent <= 4 and not (out and indent > out[-1][0] + 2):
            out.append((indent, m.group(2), m.group(3) or ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + " " + line.strip())
    return out


def test_the_architecture_listing_is_true_to_the_code():
    """Every file and folder the listing names exists (with the .py files named in a package's
    description), and every top-level module and subpackage of onnxattr is listed."""
    package = ROOT / "onnxattr"
    listed, folder_at = set(), {0: ROOT}  # indent -> the folder its entries are in
    for indent, entry, description in architecture(README.read_text(encoding="utf-8")):
        for name in entry.split(", "):
            path = folder_at[indent] / name.rstrip("/")
            assert path.exists(), f"the README's architecture names {path.relative_to(ROOT)}, which does not exist"
            listed |= {path.name} if path.parent == package else set()
            if name.endswith("/"):
                folder_at[indent + 2] = path
                for module in re.findall(r"\b(\w+\.py)\b", description):
                    assert (path / module).exists(), f"the README names {name}{module}, which does not exist"
    actual = {p.name for p in package.glob("*.py")} | {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert listed == actual, f"not listed: {sorted(actual - listed)}; listed but absent: {sorted(listed - actual)}"
