"""A tiny FileCheck: ``CHECK: text`` lines must appear in order, ``CHECK-NOT: text`` between them not."""
from __future__ import annotations


def filecheck(output: str, checks: str) -> None:
    """Assert that ``output`` satisfies the CHECK / CHECK-NEXT / CHECK-NOT directives in ``checks``."""
    lines = output.splitlines()
    pos, forbidden = 0, []
    for raw in checks.strip().splitlines():
        kind, _, pattern = raw.strip().partition(":")
        pattern = pattern.strip()
        if kind == "CHECK-NOT":
            forbidden.append(pattern)
            continue
        start = pos
        if kind == "CHECK-NEXT":
            assert pos < len(lines) and pattern in lines[pos], f"CHECK-NEXT: {pattern!r} not on line {pos + 1}:\n{output}"
            found = pos
        else:
            found = next((i for i in range(pos, len(lines)) if pattern in lines[i]), None)
            assert found is not None, f"CHECK: {pattern!r} not found after line {pos}:\n{output}"
        for f in forbidden:
            hit = [line for line in lines[start:found] if f in line]
            assert not hit, f"CHECK-NOT: {f!r} found: {hit[0]!r}\n{output}"
        forbidden, pos = [], found + 1
    for f in forbidden:
        hit = [line for line in lines[pos:] if f in line]
        assert not hit, f"CHECK-NOT: {f!r} found: {hit[0]!r}\n{output}"
