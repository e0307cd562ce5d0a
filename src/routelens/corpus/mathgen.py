"""Synthetic school-math questions with exact answers, the `math` domain of the built-in corpus.

The format follows DeepMind Mathematics ("Question: Solve -42*r + 27*c = -1167 and
130*r + 4*c = 372 for r." / "Answer: 4"). Every problem is built backwards from its answer
(choose the solution, then write the equation), so answers are integers by construction and
exact: integer arithmetic only, never floats. Six kinds, a `MathKind` each.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

# Letters used as variable names: no e/i/o/l (read as constants or digits), no I/O.
_VARIABLES = [c for c in string.ascii_lowercase if c not in "eiol"]


class MathKind(StrEnum):
    ARITHMETIC = "arithmetic"  # nested + - * / on integers, exact divisions only
    LINEAR_1D = "linear_1d"  # one linear equation in one variable
    LINEAR_2D = "linear_2d"  # two linear equations in two variables
    POLY_COMPOSE = "poly_compose"  # g(f(x)) of two small polynomials, expanded
    DERIVATIVE = "derivative"  # first/second/third derivative of a polynomial
    SEQUENCE_NEXT = "sequence_next"  # next term of a polynomial integer sequence


@dataclass(frozen=True)
class MathProblem:
    kind: MathKind
    question: str
    answer: str

    def __str__(self) -> str:
        return f"Question: {self.question}\nAnswer: {self.answer}"


# --- polynomials with integer coefficients: {power: coefficient}, zero terms dropped ---------

Poly = dict[int, int]


def poly_add(a: Poly, b: Poly) -> Poly:
    out = dict(a)
    for p, c in b.items():
        out[p] = out.get(p, 0) + c
    return {p: c for p, c in out.items() if c}


def poly_mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for pa, ca in a.items():
        for pb, cb in b.items():
            out[pa + pb] = out.get(pa + pb, 0) + ca * cb
    return {p: c for p, c in out.items() if c}


def poly_compose(outer: Poly, inner: Poly) -> Poly:
    """outer(inner(x)) by Horner's rule."""
    out: Poly = {}
    for p in range(max(outer, default=0), -1, -1):
        out = poly_add(poly_mul(out, inner), {0: outer.get(p, 0)})
    return out


def poly_derivative(a: Poly, order: int = 1) -> Poly:
    for _ in range(order):
        a = {p - 1: c * p for p, c in a.items() if p > 0}
    return a


def poly_eval(a: Poly, x: int) -> int:
    return sum(c * x**p for p, c in a.items())


def format_poly(a: Poly, var: str) -> str:
    """DeepMind-style text: `-3*x**2 + x - 7`, highest power first, `0` for the zero polynomial."""
    parts: list[str] = []
    for p in sorted(a, reverse=True):
        c = a[p]
        mag = abs(c)
        if p == 0:
            body = str(mag)
        else:
            power = var if p == 1 else f"{var}**{p}"
            body = power if mag == 1 else f"{mag}*{power}"
        if not parts:
            parts.append(("-" if c < 0 else "") + body)
        else:
            parts.append((" - " if c < 0 else " + ") + body)
    return "".join(parts) or "0"


def _random_poly(rng: random.Random, degree: int, coef: int = 9) -> Poly:
    """A polynomial of exactly `degree` with small integer coefficients (leading one non-zero)."""
    poly = {p: rng.randint(-coef, coef) for p in range(degree)}
    poly[degree] = rng.choice([c for c in range(-coef, coef + 1) if c])
    return {p: c for p, c in poly.items() if c}


def _term(coef: int, var: str) -> str:
    return var if coef == 1 else "-" + var if coef == -1 else f"{coef}*{var}"


def _signed(first: str, coef: int, rest: str) -> str:
    """`first + rest` or `first - |coef|...`, for writing a linear combination."""
    return f"{first} - {_term(-coef, rest)}" if coef < 0 else f"{first} + {_term(coef, rest)}"


def _nonzero(rng: random.Random, lo: int, hi: int) -> int:
    return rng.choice([v for v in range(lo, hi + 1) if v])


# --- the six kinds ------------------------------------------------------------------------------


def _arithmetic(rng: random.Random) -> MathProblem:
    def expr(depth: int) -> tuple[str, int, bool]:
        """(text, value, is_compound) of a random expression tree."""
        if depth == 0 or rng.random() < 0.3:
            v = rng.randint(-99, 99)
            return str(v), v, False
        op = rng.choice("+-*/")
        if op == "/":  # exact division: the divisor is chosen among the numerator's divisors
            num_text, num, num_comp = expr(depth - 1)
            divisors = [d for d in range(-12, 13) if d and num % d == 0]
            d = rng.choice([d for d in divisors if abs(d) > 1] or divisors)
            return f"({num_text})/{d}" if num_comp else f"{num}/{d}", num // d, True
        left_text, left, left_comp = expr(depth - 1)
        right_text, right, right_comp = expr(depth - 1)
        if right_comp:
            right_text = f"({right_text})"
        if op == "*" and left_comp:
            left_text = f"({left_text})"
        value = left + right if op == "+" else left - right if op == "-" else left * right
        sep = f" {op} " if op in "+-" else op
        return f"{left_text}{sep}{right_text}", value, True

    text, value, compound = expr(rng.randint(1, 3))
    if not compound:  # a bare number is no question: add a second operand
        other = rng.randint(1, 99)
        text, value = f"{text} + {other}", value + other
    template = rng.choice(["What is {}?", "Calculate {}.", "Evaluate {}.", "What is the value of {}?"])
    return MathProblem(MathKind.ARITHMETIC, template.format(text), str(value))


def _linear_1d(rng: random.Random) -> MathProblem:
    var = rng.choice(_VARIABLES)
    x = rng.randint(-20, 20)
    a = _nonzero(rng, -30, 30)
    b = rng.randint(-100, 100)
    c = rng.choice([v for v in range(-30, 31) if v != a])
    d = a * x + b - c * x  # makes x the unique solution of a*x + b = c*x + d
    lhs = _term(a, var) if b == 0 else f"{_term(a, var)} {'-' if b < 0 else '+'} {abs(b)}"
    rhs = str(d) if c == 0 else _term(c, var) if d == 0 else f"{_term(c, var)} {'-' if d < 0 else '+'} {abs(d)}"
    template = rng.choice(["Solve {} = {} for {}.", "Solve {} = {} for {}.", "What is {2} in {0} = {1}?"])
    return MathProblem(MathKind.LINEAR_1D, template.format(lhs, rhs, var), str(x))


def _linear_2d(rng: random.Random) -> MathProblem:
    u, v = rng.sample(_VARIABLES, 2)
    x, y = rng.randint(-20, 20), rng.randint(-20, 20)
    while True:
        a, b, c, d = (_nonzero(rng, -150, 150) for _ in range(4))
        if a * d - b * c:  # a unique solution
            break
    e, f = a * x + b * y, c * x + d * y
    first = _signed(_term(a, u), b, v)
    second = _signed(_term(c, u), d, v)
    ask, value = (u, x) if rng.random() < 0.5 else (v, y)
    return MathProblem(MathKind.LINEAR_2D, f"Solve {first} = {e} and {second} = {f} for {ask}.", str(value))


def _poly_compose(rng: random.Random) -> MathProblem:
    f_name, g_name, v1, v2, v3 = rng.sample(_VARIABLES, 5)  # all distinct: no `Let f(f) = ...`
    inner = _random_poly(rng, rng.randint(1, 2), coef=5)
    outer = _random_poly(rng, rng.randint(1, 2), coef=5)
    question = (
        f"Let {f_name}({v1}) = {format_poly(inner, v1)}. Let {g_name}({v2}) = {format_poly(outer, v2)}. "
        f"What is {g_name}({f_name}({v3}))?"
    )
    return MathProblem(MathKind.POLY_COMPOSE, question, format_poly(poly_compose(outer, inner), v3))


def _derivative(rng: random.Random) -> MathProblem:
    var = rng.choice(_VARIABLES)
    order = rng.choice([1, 1, 1, 2, 2, 3])
    poly = _random_poly(rng, rng.randint(order, 5), coef=12)
    text = format_poly(poly, var)
    ordinal = {1: "", 2: "second ", 3: "third "}[order]
    template = rng.choice(
        [
            "What is the {o}derivative of {p} wrt {v}?",
            "Find the {o}derivative of {p} wrt {v}.",
            "Differentiate {p} with respect to {v}."
            if order == 1
            else "Find the {o}derivative of {p} with respect to {v}.",
        ]
    )
    question = template.format(o=ordinal, p=text, v=var)
    return MathProblem(MathKind.DERIVATIVE, question, format_poly(poly_derivative(poly, order), var))


def _sequence_next(rng: random.Random) -> MathProblem:
    degree = rng.choice([1, 1, 2, 2, 3])
    poly = _random_poly(rng, degree, coef=9 if degree < 3 else 3)
    shown = degree + rng.randint(3, 4)  # enough terms to pin down the polynomial and then some
    terms = [poly_eval(poly, n) for n in range(1, shown + 2)]
    listed = ", ".join(map(str, terms[:-1]))
    template = rng.choice(["What is next in {}?", "What comes next: {}?", "What is the next term in {}?"])
    return MathProblem(MathKind.SEQUENCE_NEXT, template.format(listed), str(terms[-1]))


_GENERATORS = {
    MathKind.ARITHMETIC: _arithmetic,
    MathKind.LINEAR_1D: _linear_1d,
    MathKind.LINEAR_2D: _linear_2d,
    MathKind.POLY_COMPOSE: _poly_compose,
    MathKind.DERIVATIVE: _derivative,
    MathKind.SEQUENCE_NEXT: _sequence_next,
}


def generate_problem(rng: random.Random, kind: MathKind | str | None = None) -> MathProblem:
    """One problem of `kind` (a random kind when None)."""
    kind = MathKind(kind) if kind is not None else rng.choice(list(MathKind))
    return _GENERATORS[kind](rng)


def math_documents(rng: random.Random) -> Iterator[str]:
    """Endless documents of 3 to 8 mixed problems each, one `Question:`/`Answer:` pair after another."""
    while True:
        yield "\n".join(str(generate_problem(rng)) for _ in range(rng.randint(3, 8)))
