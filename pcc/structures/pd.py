"""Poon–Domingos (PD) region graphs over images, as readable ``.pc`` text.

A *region* is an axis-aligned rectangle of pixels, rows ``y0..y1-1`` and columns ``x0..x1-1``, named
``r[y0, x0, y1, x1]`` in the generated file. The root region is the whole ``H x W`` image. A region is
cut in two along every *cut position* of each dimension; with split interval ``s`` in that dimension,
the cut positions of an extent ``a..b-1`` are

* the multiples of ``s`` strictly between ``a`` and ``b`` (counted from the image origin), if there are
  any (a *coarse* extent: it spans more than one interval cell);
* otherwise (the extent lies inside one interval cell, in particular whenever it is shorter than
  ``s``, and also when it is exactly one cell) every position strictly between ``a`` and ``b``, so
  that regions are refined down to single pixels.

A dimension of extent 1 has no cut. Cutting at row ``m`` gives the product of the regions above and
below (``ph[y0, x0, y1, x1, m]``), cutting at column ``m`` the product of the regions left and right
(``pv[y0, x0, y1, x1, m]``); both are aligned products (node ``k`` multiplies node ``k`` of each half).
Regions reached by several parents are shared (the circuit is a DAG). Every region other than the
root and the pixels is a sum block of ``latents`` nodes mixing the products of all its cuts; the root
is a sum of one node over the products of its cuts; a pixel region is an input block of ``latents``
nodes (with ``C > 1`` channels: the aligned product of the pixel's ``C`` channel inputs, each of
``latents`` nodes). The set of regions is exactly (reachable row extents) x (reachable column extents),
and regions of one size share the same cuts relative to their corner, so the file is written as one
loop nest per region size.

Images are ``shape = (H, W)`` with variables ``X[i, j]``, or ``(H, W, C)`` with ``C`` channels per pixel
as separate variables ``X[i, j, c]`` (channel last: the variable order is that of an ``H x W x C`` array
flattened in row-major order, e.g. ``images.reshape(n, -1)`` for ``NHWC`` images).

:func:`pd_counts` recounts regions, products, blocks and sum edges by walking the region graph from the
root, independently of the text.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

__all__ = ["pd_source", "pd_counts"]

_DISTS = ("categorical", "bernoulli", "gaussian")


# --- argument checks, shared by the generators of this package ---------------------------------------

def _int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming the argument."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")
    return v


def _domain(dist: str, num_cats, name: str = "num_cats") -> str:
    """The variable domain for ``dist`` (``num_cats``, called ``name`` in errors, is read for categorical only)."""
    if dist not in _DISTS:
        raise ValueError(f"dist must be one of {', '.join(_DISTS)}, got {dist!r}")
    if dist == "gaussian":
        return "real"
    if dist == "bernoulli":
        return "binary"
    return f"categorical({_int(name, num_cats, 1)})"


# --- the region graph, dimension by dimension --------------------------------------------------------

@dataclass(frozen=True)
class _Starts:
    """Start positions ``base + step*k + o`` for ``k < outer``, ``o < inner``."""

    base: int
    step: int
    outer: int
    inner: int

    @property
    def count(self) -> int:
        return self.outer * self.inner


def _axis(n: int, s: int) -> dict[int, tuple[list[_Starts], list[int]]]:
    """Every reachable extent length of a dimension of size ``n`` with interval ``s``: its start
    positions and its cut offsets (relative to the start).

    Fine extents (inside one cell, length <= s): any start that keeps them inside a cell, cut at every
    offset. Coarse extents (length > s): they run between cell boundaries (multiples of ``s``, or ``n``),
    so they start at a multiple of ``s`` and are cut at the multiples of ``s`` inside.
    """
    out: dict[int, tuple[list[_Starts], list[int]]] = {}
    full, rest = divmod(n, s)  # ``full`` complete cells, then a partial cell of ``rest``
    for h in range(1, min(s, n) + 1):
        starts = []
        if full:
            starts.append(_Starts(0, s, full, s - h + 1))
        if rest >= h:
            starts.append(_Starts(full * s, 0, 1, rest - h + 1))
        out[h] = (starts, list(range(1, h)))
    for h in range(s + 1, n + 1):
        if h % s == 0:  # from one multiple of s to another
            starts = [_Starts(0, s, (n - h) // s + 1, 1)]
        elif h % s == rest:  # from a multiple of s to the image edge
            starts = [_Starts(n - h, 0, 1, 1)]
        else:
            continue
        out[h] = (starts, list(range(s, h, s)))
    return out


# --- public API --------------------------------------------------------------------------------------

def _check(shape, latents, split_interval) -> tuple[int, int, int, int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be (H, W) or (H, W, C), got {shape!r}") from None
    if len(dims) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (H, W, C), got {shape!r}")
    h = _int("the image height", dims[0], 1)
    w = _int("the image width", dims[1], 1)
    c = _int("the number of channels", dims[2], 1) if len(dims) == 3 else 1
    latents = _int("latents", latents, 1)
    if isinstance(split_interval, (tuple, list)):
        if len(split_interval) != 2:
            raise ValueError(f"split_interval must be an integer or a pair (rows, columns), got {split_interval!r}")
        sy = _int("the row split interval", split_interval[0], 1)
        sx = _int("the column split interval", split_interval[1], 1)
    else:
        sy = sx = _int("split_interval", split_interval, 1)
    return h, w, c, latents, sy, sx


def pd_source(shape: tuple[int, int] | tuple[int, int, int], latents: int,
              split_interval: int | tuple[int, int] = 4, dist: str = "categorical", num_cats: int = 256,
              seed: int = 0) -> str:
    """The ``.pc`` text of a PD circuit over an image of ``shape`` ``(H, W)`` or ``(H, W, C)``.

    ``latents``: nodes per region (and per pixel input). ``split_interval``: ``s`` or ``(s_rows,
    s_cols)``, see the module docstring for the cut rule. ``dist``: ``categorical`` (variables
    ``categorical(num_cats)``), ``bernoulli`` (``binary``) or ``gaussian`` (``real``); ``num_cats`` is
    read only for categorical. ``seed`` is written as the file's ``seed`` statement.
    """
    height, width, chans, latents, sy, sx = _check(shape, latents, split_interval)
    domain = _domain(dist, num_cats)
    seed = _int("seed", seed, 0)
    ys, xs = _axis(height, sy), _axis(width, sx)

    # Sizes, from the per-dimension tables (pd_counts recounts them by walking the region graph).
    n_y = {h: sum(p.count for p in v[0]) for h, v in ys.items()}
    n_x = {w: sum(p.count for p in v[0]) for w, v in xs.items()}
    sizes = sorted(((h, w) for h in ys for w in xs), key=lambda hw: (hw[0] * hw[1], hw))
    regions = sum(n_y[h] * n_x[w] for h, w in sizes)
    pixels = height * width
    products = edges = 0
    for h, w in sizes:
        if (h, w) == (1, 1):
            continue
        cuts = len(ys[h][1]) + len(xs[w][1])
        products += n_y[h] * n_x[w] * cuts
        edges += n_y[h] * n_x[w] * cuts * latents * (1 if (h, w) == (height, width) else latents)
    if pixels == 1:
        edges = latents
    sums = regions - pixels if pixels > 1 else 1
    in_blocks = pixels * chans
    prod_blocks = products + (pixels if chans > 1 else 0)

    img = f"{height}x{width}" + (f"x{chans}" if chans > 1 else "")
    var_decl = "X[H, W, C]" if len(tuple(shape)) == 3 else "X[H, W]"
    interval = f"{sy}" if sy == sx else f"{sy} (rows) x {sx} (columns)"
    lines = [
        f"# Poon-Domingos (PD) region graph over a {img} image, {latents} latents per region, {dist} inputs.",
        f"# Split interval {interval}: an extent is cut at the multiples of the interval strictly inside it;",
        "# an extent inside one interval cell is cut at every position, down to single pixels.",
        "# r[y0, x0, y1, x1]: the region of rows y0..y1-1 and columns x0..x1-1 (the image is r[0, 0, H, W]).",
        "# ph[y0, x0, y1, x1, m]: its cut at row m (top x bottom); pv[y0, x0, y1, x1, m]: at column m",
        "# (left x right); aligned products. Every region but the root and the pixels: a sum of L nodes",
        "# over the products of all its cuts; the root: a sum of 1 node.",
        ("# A pixel region is the input block of its variable." if chans == 1 else
         f"# A pixel region is the aligned product of its {chans} channel inputs px[i, j, c] = X[i, j, c]."),
        f"# Sizes: {_plural(regions, 'region')} ({_plural(pixels, 'pixel')}), {products} cut products; {in_blocks} input, "
        f"{prod_blocks} product and {sums} sum blocks; {edges} sum edges.",
        "# Generated by pcc.structures.pd.",
        "",
        f"let H = {height}",
        f"let W = {width}",
    ]
    if len(tuple(shape)) == 3:
        lines.append(f"let C = {chans}")
    lines += [f"let L = {latents}", f"seed {seed}", f"var {var_decl} : {domain}", ""]

    # Pixels.
    if chans == 1:
        lines += ["# Pixel regions.", "for i in 0..H { for j in 0..W {",
                  f"    r[i, j, i+1, j+1] = input({'X[i, j, 0]' if len(tuple(shape)) == 3 else 'X[i, j]'}, "
                  f"{dist}, n=L)", "} }"]
    else:
        factors = ", ".join(f"px[i, j, {c}]" for c in range(chans))
        lines += ["# Channel inputs, and pixel regions: the product of a pixel's channels.",
                  "for i in 0..H { for j in 0..W { for c in 0..C {",
                  f"    px[i, j, c] = input(X[i, j, c], {dist}, n=L)", "} } }",
                  "for i in 0..H { for j in 0..W {", f"    r[i, j, i+1, j+1] = prod({factors})", "} }"]

    # Every other region size, smallest area first (a region's halves are smaller than it).
    for h, w in sizes:
        if (h, w) == (1, 1):
            continue
        is_root = (h, w) == (height, width)
        cy, cx = ys[h][1], xs[w][1]
        count = n_y[h] * n_x[w]
        what = "the whole image" if is_root else f"{count} region{'s' if count > 1 else ''}"
        lines += ["", f"# {h} x {w} (rows x columns): {what}, {_plural(len(cy), 'row cut')} and "
                      f"{_plural(len(cx), 'column cut')}{'' if is_root else ' each'}."]
        for py in ys[h][0]:
            for px_ in xs[w][0]:
                lines += _loop_nest(py, px_, h, w, cy, cx, "1" if is_root else "L")
    if pixels == 1:
        lines += ["", "# A single pixel: the root mixes its nodes.", "top = sum(r[0, 0, 1, 1], n=1)", "root top"]
    else:
        lines += ["", "root r[0, 0, H, W]"]
    return "\n".join(lines) + "\n"


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _dim(starts: _Starts, axis: str) -> tuple[list[str], int | str]:
    """Loop headers over the starts of one dimension and the start as an int or the name ``axis``."""
    heads, terms = [], []
    if starts.base:
        terms.append(str(starts.base))
    if starts.outer > 1:
        heads.append(f"for c{axis} in 0..{starts.outer}")
        terms.append(f"{starts.step}*c{axis}")
    if starts.inner > 1:
        heads.append(f"for o{axis} in 0..{starts.inner}")
        terms.append(f"o{axis}")
    if not heads:
        return [], starts.base
    if terms == [f"o{axis}"]:  # the start is the loop variable itself: name it after the axis
        return [f"for {axis} in 0..{starts.inner}"], axis
    return heads, " + ".join(terms)


def _at(start: int | str, k: int) -> str:
    if isinstance(start, int):
        return str(start + k)
    return start if k == 0 else f"{start}+{k}"


def _loop_nest(py: _Starts, px: _Starts, h: int, w: int, cuts_y: list[int], cuts_x: list[int],
               n: str) -> list[str]:
    """The products and sums of the regions ``h x w`` whose corners run over ``py`` x ``px``."""
    heads_y, ey = _dim(py, "y")
    heads_x, ex = _dim(px, "x")
    heads = heads_y + heads_x
    y = ey if isinstance(ey, int) else "y"
    x = ex if isinstance(ex, int) else "x"
    y1, x1 = _at(y, h), _at(x, w)
    reg = f"{_at(y, 0)}, {_at(x, 0)}, {y1}, {x1}"
    body = []
    if ey not in ("y",) and not isinstance(ey, int):
        body.append(f"let y = {ey}")
    if ex not in ("x",) and not isinstance(ex, int):
        body.append(f"let x = {ex}")
    kids = []
    for m in cuts_y:
        ym = _at(y, m)
        body.append(f"ph[{reg}, {ym}] = prod(r[{_at(y, 0)}, {_at(x, 0)}, {ym}, {x1}], r[{ym}, {_at(x, 0)}, {y1}, {x1}])")
        kids.append(f"ph[{reg}, {ym}]")
    for m in cuts_x:
        xm = _at(x, m)
        body.append(f"pv[{reg}, {xm}] = prod(r[{_at(y, 0)}, {_at(x, 0)}, {y1}, {xm}], r[{_at(y, 0)}, {xm}, {y1}, {x1}])")
        kids.append(f"pv[{reg}, {xm}]")
    body.append(f"r[{reg}] = sum({', '.join(kids)}, n={n})")
    if not heads:
        return body
    return [" ".join(f"{hd} {{" for hd in heads), *("    " + b for b in body), " ".join("}" for _ in heads)]


def pd_counts(shape: tuple[int, int] | tuple[int, int, int], latents: int,
              split_interval: int | tuple[int, int] = 4) -> dict[str, int]:
    """Sizes of :func:`pd_source`'s circuit, by walking the region graph from the whole image.

    Returns ``regions`` (pixels and root included), ``pixels``, ``products`` (cut products),
    ``input_blocks``, ``prod_blocks`` (cut products, plus one channel product per pixel when C > 1),
    ``sum_blocks`` and ``sum_edges``.
    """
    height, width, chans, latents, sy, sx = _check(shape, latents, split_interval)

    def cuts(a: int, b: int, s: int) -> list[int]:
        grid = [m for m in range(a + 1, b) if m % s == 0]
        return grid or list(range(a + 1, b))

    root = (0, 0, height, width)
    seen = {root}
    todo = [root]
    products = edges = 0
    while todo:
        y0, x0, y1, x1 = todo.pop()
        if y1 - y0 == 1 and x1 - x0 == 1:
            continue
        halves = [((y0, x0, m, x1), (m, x0, y1, x1)) for m in cuts(y0, y1, sy)]
        halves += [((y0, x0, y1, m), (y0, m, y1, x1)) for m in cuts(x0, x1, sx)]
        products += len(halves)
        edges += (1 if (y0, x0, y1, x1) == root else latents) * len(halves) * latents
        for pair in halves:
            for r in pair:
                if r not in seen:
                    seen.add(r)
                    todo.append(r)
    pixels = sum(1 for r in seen if r[2] - r[0] == 1 and r[3] - r[1] == 1)
    if len(seen) == 1:  # a single pixel: one root sum over its nodes
        edges = latents
    return {
        "regions": len(seen),
        "pixels": pixels,
        "products": products,
        "input_blocks": pixels * chans,
        "prod_blocks": products + (pixels if chans > 1 else 0),
        "sum_blocks": len(seen) - pixels + (1 if len(seen) == 1 else 0),
        "sum_edges": edges,
    }
