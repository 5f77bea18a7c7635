"""docs/language.md stays true: every ```pc example compiles, the grammar copy matches, the error example is real.

Fenced blocks of the document, by their tag:

* ``pc``            a complete program: must compile with ``load_text`` and pass ``pcc.ir.verify``;
* ``pc-file PATH``  a file that a ``pc`` example includes: written to PATH (relative to the examples);
* ``python``        setup code (writes the tensors file an example reads): run in the examples' folder;
* ``pc-broken``     a program with mistakes: must fail, printing exactly the ``text`` block that follows;
* ``lark``          the grammar: must equal frontend/pc.lark.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcc.frontend import load_text
from pcc.ir import Circuit, UserError, verify

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def _blocks() -> list[tuple[str, str, str, int]]:
    """(tag, argument of the tag, body, line number) of every fenced block, in order."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        info = m.group(1).strip().split(maxsplit=1)
        tag = info[0] if info else ""
        arg = info[1].strip() if len(info) > 1 else ""
        out.append((tag, arg, m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


BLOCKS = _blocks()
PROGRAMS = [(line, body) for tag, _, body, line in BLOCKS if tag == "pc"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the document's auxiliary files (included parts, tensors files), made current."""
    monkeypatch.chdir(tmp_path)
    for tag, arg, body, line in BLOCKS:
        if tag == "pc-file":
            assert arg, f"docs/language.md:{line}: a pc-file block needs a path"
            target = tmp_path / arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
        elif tag == "python":
            exec(compile(body, f"docs/language.md:{line}", "exec"), {"__name__": "__doc_example__"})
    return tmp_path


def test_document_has_examples() -> None:
    assert len(PROGRAMS) >= 20, "expected an example for every construct"


@pytest.mark.parametrize("line,body", PROGRAMS, ids=[f"line{line}" for line, _ in PROGRAMS])
def test_example_compiles(line: int, body: str, workdir: Path) -> None:
    try:
        circuit = load_text(body, file=str(workdir / "doc.pc"))
    except UserError as e:
        pytest.fail(f"the example at docs/language.md:{line} does not compile:\n{e.render()}")
    assert isinstance(circuit, Circuit)
    verify(circuit)
    assert circuit.blocks[circuit.root].n == 1


def test_grammar_copy_matches_pc_lark() -> None:
    grammars = [body for tag, _, body, _ in BLOCKS if tag == "lark"]
    assert len(grammars) == 1
    assert grammars[0] == (ROOT / "frontend" / "pc.lark").read_text(encoding="utf-8")


def _error_examples() -> list[tuple[str, str, int]]:
    out = []
    for i, (tag, _, body, line) in enumerate(BLOCKS):
        if tag == "pc-broken":
            assert i + 1 < len(BLOCKS) and BLOCKS[i + 1][0] == "text", \
                f"docs/language.md:{line}: a pc-broken block must be followed by its text output"
            out.append((body, BLOCKS[i + 1][2], line))
    assert out, "the Errors section needs a pc-broken example"
    return out


def test_error_example_is_real() -> None:
    for broken, expected, _ in _error_examples():
        with pytest.raises(UserError) as info:
            load_text(broken, file="broken.pc")
        assert info.value.render() == expected.rstrip("\n")
        assert len(info.value.diagnostics) > 1, "the example should show several errors reported together"


def test_error_example_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("pcc.cli")
    monkeypatch.chdir(tmp_path)
    for broken, expected, _ in _error_examples():
        Path("broken.pc").write_text(broken, encoding="utf-8")
        assert cli.main(["check", "broken.pc"]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == expected
