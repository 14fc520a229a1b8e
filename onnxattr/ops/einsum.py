"""Einsum: a sum of products over the axes an equation names (as numpy.einsum).

The vjp of operand i is itself an einsum: of the output's cotangent with every other operand,
to operand i's subscripts. Letters that only operand i has (summed over in the forward) come
back by broadcasting; an ellipsis is summed back to the operand's own broadcast shape.
Equations that repeat a letter within one operand (diagonals) are refused when the op is made.
"""
from __future__ import annotations

from typing import Sequence

from ..backend import array_module
from .base import Array, Grads, Op, unbroadcast

ELLIPSIS = "..."


def parse(equation: str) -> tuple[list[str], str]:
    """The operands' subscripts and the output's (implicit mode: the ellipsis, then the letters
    that appear once, in alphabetical order)."""
    eq = equation.replace(" ", "")
    left, arrow, right = eq.partition("->")
    terms = left.split(",")
    if not arrow:
        letters = [c for t in terms for c in t.replace(ELLIPSIS, "")]
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        right = (ELLIPSIS if any(ELLIPSIS in t for t in terms) else "") + "".join(once)
    return terms, right


class Einsum(Op):
    """y = einsum(equation, *inputs)."""

    kind = "other"

    def setup(self) -> None:
        self.terms, self.output = parse(self.equation)
        for t in self.terms:
            letters = t.replace(ELLIPSIS, "")
            if len(set(letters)) != len(letters):
                raise self.unsupported(f"equation {self.equation!r} repeats a letter in {t!r} (a diagonal)")
            if ELLIPSIS in t and ELLIPSIS not in self.output:
                raise self.unsupported(f"equation {self.equation!r} sums over an ellipsis")

    def forward(self, *xs: Array) -> tuple:
        xp = array_module(*xs)
        if len(xs) != len(self.terms):
            raise self.unsupported(f"{len(xs)} inputs for the {len(self.terms)} operands of {self.equation!r}")
        eq = ",".join(self.terms) + "->" + self.output
        return (xp.einsum(eq, *xs),), xs

    def operand_grad(self, i: int, g: Array, xs: Sequence[Array]) -> Array:
        """The cotangent of operand i: einsum of g with the other operands to its subscripts."""
        xp = array_module(g)
        term, x = self.terms[i], xs[i]
        others = [t for j, t in enumerate(self.terms) if j != i]
        present = set(self.output + "".join(others))
        letters = term.replace(ELLIPSIS, "")
        kept = "".join(c for c in letters if c in present)
        # the ellipsis stays in the result (numpy cannot sum it away), and is summed below
        eq = ",".join([self.output] + others) + "->" + (ELLIPSIS if ELLIPSIS in self.output else "") + kept
        r = xp.einsum(eq, g, *[xs[j] for j in range(len(xs)) if j != i])
        ellipsis = self._ellipsis_shape(term, x.shape)
        dims = dict(zip(letters, self._letter_dims(term, x.shape)))
        r = unbroadcast(r, ellipsis + tuple(dims[c] for c in kept))
        # the letters summed only in this operand come back as broadcast axes
        missing = "".join(c for c in letters if c not in present)
        r = xp.broadcast_to(r.reshape(r.shape + (1,) * len(missing)), r.shape + tuple(dims[c] for c in missing))
        # r's axes are (ellipsis, kept, missing): put them in the operand's order
        axis_of = {c: len(ellipsis) + k for k, c in enumerate(kept + missing)}
        head, _, tail = term.partition(ELLIPSIS)
        perm = [axis_of[c] for c in head] + list(range(len(ellipsis))) + [axis_of[c] for c in tail]
        return xp.ascontiguousarray(r.transpose(perm))

    @staticmethod
    def _letter_dims(term: str, shape: tuple[int, ...]) -> list[int]:
        head, _, tail = term.partition(ELLIPSIS)
        return list(shape[:len(head)]) + (list(shape[len(shape) - len(tail):]) if tail else [])

    @staticmethod
    def _ellipsis_shape(term: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if ELLIPSIS not in term:
            return ()
        head, _, tail = term.partition(ELLIPSIS)
        return tuple(shape[len(head):len(shape) - len(tail)])

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [self.operand_grad(i, grads[0], ctx) if need else None for i, need in enumerate(needs)]



