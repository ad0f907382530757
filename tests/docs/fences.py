"""The fenced code blocks of the README and the documentation pages, and how the docs tests run them.

Every fence names its language. A ```bash / ```sh / ```shell / ```console or ```python block is
executed by a test, in page order, in a temporary copy of the checkout, unless the line right before
its fence is one of these HTML comments (invisible on the rendered page):

    <!-- not-run: why -->            not executed; the reason is required
    <!-- same-as: docs/page.md -->    not executed here: every command of it is in a block of that page,
                                     which runs (tests/docs/test_code_blocks.py checks the claim)
    <!-- test-overrides: k=v ... -->  executed with these words appended to each `sslp` or
                                     `python -m ssl_platform` pretrain/eval command of the block: the
                                     page shows the full command, the test runs it small

A block of another language is not executed, except that a block with `title="FILE"` is a file the
page asks the reader to write: it is written to FILE (relative to the working directory) before the
blocks after it run. Pages whose blocks another test runs are listed in `RUN_ELSEWHERE`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = ("bash", "sh", "shell", "console")
PYTHON = ("python", "py")
MARKERS = ("not-run", "same-as", "test-overrides")
# pages whose blocks a test of their own runs, with what that test knows about the page
RUN_ELSEWHERE = {
    "docs/quickstart.md": "tests/docs/test_quickstart.py",
    "docs/adding_a_method.md": "tests/test_adding_a_method.py",
}
OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>[a-z][a-z-]*):\s*(?P<text>.*?)\s*-->\s*$")
TITLE = re.compile(r'title="([^"]+)"')
COMMAND = re.compile(r"(^|\s)(sslp|-m ssl_platform)\s+(pretrain|eval)\b")
BLOCK_TIMEOUT_S = 900


@dataclass(frozen=True)
class Fence:
    """One fenced block: where it is, its language and title, its code, and the marker before it."""

    page: str  # relative to the repository root, e.g. "docs/quickstart.md"
    line: int  # 1-based line of the opening fence
    lang: str
    title: str | None
    code: str
    marker: str | None  # one of MARKERS, or another word someone wrote (the tests refuse it)
    argument: str  # the marker's text

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def executed(self) -> bool:
        return self.lang in SHELL + PYTHON and self.title is None and self.marker in (None, "test-overrides")


def pages() -> list[str]:
    """The README and every page under docs/ (the result tables under docs/img/ are data, not pages)."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "img" not in p.relative_to(ROOT / "docs").parts)
    return ["README.md", *(p.relative_to(ROOT).as_posix() for p in docs)]


def parse(page: str) -> list[Fence]:
    """The fences of a page, in order. Raises ValueError on a fence that is never closed."""
    lines = (ROOT / page).read_text().splitlines()
    fences, i = [], 0
    while i < len(lines):
        opened = OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence, info = opened["indent"], opened["fence"], opened["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise ValueError(f"{page}:{i + 1}: the fence {fence}{info} is never closed")
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1:end])
        marked = MARKER.match(lines[i - 1]) if i > 0 else None
        title = TITLE.search(info)
        fences.append(Fence(page, i + 1, info.split()[0] if info else "", title[1] if title else None, code + "\n",
                            marked["kind"] if marked else None, marked["text"] if marked else ""))
        i = end + 1
    return fences


def dangling_markers(page: str) -> list[str]:
    """Markers of MARKERS that no fence follows: the block they were meant for moved away."""
    lines = (ROOT / page).read_text().splitlines()
    return [f"{page}:{n + 1}" for n, line in enumerate(lines)
            if (m := MARKER.match(line)) and m["kind"] in MARKERS
            and not (n + 1 < len(lines) and OPEN.match(lines[n + 1]))]


def commands(fence: Fence) -> list[str]:
    """The command lines of a shell block (console: the `$ ` lines), comments and blank lines left out."""
    lines = fence.code.splitlines()
    if fence.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def with_overrides(code: str, words: str) -> str:
    """`code` with `words` appended to every sslp / python -m ssl_platform pretrain or eval command,
    before the command's trailing comment."""
    out = []
    for line in code.splitlines():
        if COMMAND.search(line):
            if line.rstrip().endswith("\\"):
                raise ValueError(f"test-overrides cannot extend a continued line: {line!r}")
            command, _, comment = line.partition(" #")
            line = f"{command.rstrip()} {words}" + (f"  #{comment}" if comment else "")
        out.append(line)
    return "\n".join(out) + "\n"


def checkout_files() -> list[str]:
    """What a fresh clone of this working tree holds: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    return [f for f in listed.split("\0") if f and (ROOT / f).is_file()]


def copy_checkout(dest: Path) -> Path:
    """A copy of the checkout's files in `dest` (runs/, data/ and .venv/ are ignored by git, so not in it)."""
    for name in checkout_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    return dest


def environment(sandbox: Path) -> dict[str, str]:
    """What the blocks run with: this interpreter's `bin/` first on PATH (sslp, torchrun, mkdocs), and the
    data root and zoo inside the sandbox, so nothing reads or writes the real checkout's."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSLP_ALLOW_COMPONENTS", "RANK", "WORLD_SIZE")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               SSL_PLATFORM_DATA=str(sandbox / "data"), SSL_PLATFORM_ZOO=str(sandbox / "zoo"),
               OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1", PYTHONUNBUFFERED="1")
    return env


# the notebook a page's Python blocks run in: a child process that execs each block it is sent in one
# namespace and answers on its own pipe (what the blocks print to fd 1 cannot garble the answers)
KERNEL = """
import contextlib, io, json, os, sys, traceback
answers = os.fdopen(int(sys.argv[1]), "w")
namespace = {"__name__": "__main__"}
for request in sys.stdin:
    request, printed, error = json.loads(request), io.StringIO(), None
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(request["code"], request["where"], "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    answers.write(json.dumps({"printed": printed.getvalue(), "error": error}) + "\\n")
    answers.flush()
"""


class PageRunner:
    """Runs a page's blocks in order in one sandbox, as a reader would in one shell and one notebook:
    shell blocks in a fresh bash each (`set -euo pipefail`), Python blocks in one Python process kept for
    the page (one namespace), titled blocks written as files. Everything runs in the sandbox with
    `PYTHONPATH` on it, so the code under test is the sandbox's copy; its `.venv` is this interpreter's
    environment, as `make venv` would have left it. Use it as a context manager (it ends the notebook)."""

    def __init__(self, sandbox: Path):
        self.sandbox, self.env, self.kernel = sandbox, environment(sandbox), None
        self.env["PYTHONPATH"] = str(sandbox)
        if sys.prefix != sys.base_prefix and not (sandbox / ".venv").exists():  # as after `make venv`: .venv/bin/sslp
            (sandbox / ".venv").symlink_to(sys.prefix, target_is_directory=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.kernel is not None:
            process, answers, log = self.kernel
            process.stdin.close()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            answers.close()
            log.close()

    def run(self, fence: Fence) -> str:
        """Run or write one block; returns what it printed. Raises AssertionError naming the block on failure."""
        if fence.title is not None:
            target = (self.sandbox / fence.title).resolve()
            assert target.is_relative_to(self.sandbox), f"{fence.where}: title {fence.title!r} leaves the sandbox"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(fence.code)
            return ""
        if fence.lang in SHELL:
            return self._shell(fence)
        return self._python(fence)

    def _shell(self, fence: Fence) -> str:
        code = "\n".join(commands(fence)) + "\n" if fence.lang == "console" else fence.code
        if fence.marker == "test-overrides":
            code = with_overrides(code, fence.argument)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], check=False, cwd=self.sandbox, env=self.env,
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        output = done.stdout + done.stderr
        assert done.returncode == 0, (f"{fence.where}: the block exited with {done.returncode}:\n{code}\n"
                                      f"--- its output (last 4000 characters):\n{output[-4000:]}")
        return output

    def _python(self, fence: Fence) -> str:
        if self.kernel is None:
            read, write = os.pipe()
            log = (self.sandbox / ".python-blocks.log").open("w+")
            process = subprocess.Popen([sys.executable, "-c", KERNEL, str(write)], pass_fds=(write,), cwd=self.sandbox,
                                       env=self.env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                       text=True)
            os.close(write)
            self.kernel = (process, os.fdopen(read), log)
        process, answers, log = self.kernel
        process.stdin.write(json.dumps({"code": fence.code, "where": fence.where}) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([answers], [], [], BLOCK_TIMEOUT_S)
        line = answers.readline() if ready else ""
        if not line:
            log.seek(0)
            raise AssertionError(f"{fence.where}: the Python process gave no answer (ended or took over "
                                 f"{BLOCK_TIMEOUT_S} s); its output:\n{log.read()[-4000:]}")
        answer = json.loads(line)
        assert answer["error"] is None, (f"{fence.where}: the block raised:\n{answer['error']}\n{fence.code}\n"
                                         f"--- it printed:\n{answer['printed'][-4000:]}")
        return answer["printed"]


def expected_prints(fence: Fence) -> list[str]:
    """What a Python block says its `print(...)` lines print: the comment after each of them."""
    if fence.lang not in PYTHON:
        return []
    return [m[1].strip() for m in re.finditer(r"^\s*print\(.*\)\s+#\s*(.+)$", fence.code, flags=re.MULTILINE)]


def shell_words(text: str) -> list[str]:
    """`text` split as the shell would (the marker's override words)."""
    return shlex.split(text)
