"""The math generator: every kind of answer checked by an independent solver (sympy or brute force)."""

from __future__ import annotations

import random
import re

import pytest
import sympy

from routelens.corpus.mathgen import (
    MathKind,
    format_poly,
    generate_problem,
    math_documents,
    poly_compose,
)

N = 150  # problems checked per kind


def _expr(text: str):
    symbols = {ch: sympy.Symbol(ch) for ch in set(re.findall(r"\b[a-z]\b", text))}
    return sympy.parse_expr(text, local_dict=symbols)


def _problems(kind: MathKind, seed: int = 0):
    rng = random.Random(seed)
    return [generate_problem(rng, kind) for _ in range(N)]


def test_arithmetic_answers_match_python_evaluation():
    for p in _problems(MathKind.ARITHMETIC):
        m = re.fullmatch(r"(?:What is the value of|What is|Calculate|Evaluate) (.+)[?.]", p.question)
        assert m, p.question
        value = eval(m.group(1), {"__builtins__": {}})  # + - * / on integer literals only
        assert value == int(p.answer), p


def test_linear_1d_answers_solve_the_equation():
    for p in _problems(MathKind.LINEAR_1D):
        m = re.fullmatch(r"Solve (.+) = (.+) for ([a-z])\.", p.question) or re.fullmatch(
            r"What is ([a-z]) in (.+) = (.+)\?", p.question
        )
        assert m, p.question
        if p.question.startswith("Solve"):
            lhs, rhs, var = m.groups()
        else:
            var, lhs, rhs = m.groups()
        solutions = sympy.solve(sympy.Eq(_expr(lhs), _expr(rhs)), sympy.Symbol(var))
        assert solutions == [int(p.answer)], p


def test_linear_2d_answers_solve_the_system():
    for p in _problems(MathKind.LINEAR_2D):
        m = re.fullmatch(r"Solve (.+) = (-?\d+) and (.+) = (-?\d+) for ([a-z])\.", p.question)
        assert m, p.question
        l1, r1, l2, r2, var = m.groups()
        eqs = [sympy.Eq(_expr(l1), int(r1)), sympy.Eq(_expr(l2), int(r2))]
        unknowns = sorted(_expr(l1).free_symbols | _expr(l2).free_symbols, key=str)
        assert len(unknowns) == 2
        solution = sympy.solve(eqs, unknowns, dict=True)
        assert len(solution) == 1 and solution[0][sympy.Symbol(var)] == int(p.answer), p


def test_poly_composition_answers_equal_the_expanded_composition():
    for p in _problems(MathKind.POLY_COMPOSE):
        m = re.fullmatch(
            r"Let ([a-z])\(([a-z])\) = (.+)\. Let ([a-z])\(([a-z])\) = (.+)\. What is ([a-z])\(([a-z])\(([a-z])\)\)\?",
            p.question,
        )
        assert m, p.question
        f, fv, fbody, g, gv, gbody, outer, inner, var = m.groups()
        defs = {f: (fv, _expr(fbody)), g: (gv, _expr(gbody))}
        x = sympy.Symbol(var)
        inner_value = defs[inner][1].subs(sympy.Symbol(defs[inner][0]), x)
        composed = defs[outer][1].subs(sympy.Symbol(defs[outer][0]), inner_value)
        assert sympy.expand(composed - _expr(p.answer)) == 0, p


def test_derivative_answers_match_sympy():
    for p in _problems(MathKind.DERIVATIVE):
        m = re.fullmatch(
            r"(?:What is the|Find the|Differentiate) ?(second |third )?(?:derivative of )?(.+?) "
            r"(?:wrt|with respect to) ([a-z])[?.]",
            p.question,
        )
        assert m, p.question
        order = {None: 1, "second ": 2, "third ": 3}[m.group(1)]
        expected = sympy.diff(_expr(m.group(2)), sympy.Symbol(m.group(3)), order)
        assert sympy.expand(expected - _expr(p.answer)) == 0, p


def _extrapolate(terms: list[int]) -> int:
    """Next term by the table of finite differences (a polynomial sequence ends in a constant row)."""
    rows = [terms]
    while len(set(rows[-1])) > 1:
        rows.append([b - a for a, b in zip(rows[-1], rows[-1][1:])])
        assert len(rows[-1]) >= 2, f"too few terms to determine {terms}"
    return sum(row[-1] for row in rows)


def test_sequence_answers_continue_the_difference_table():
    assert _extrapolate([1, 4, 9, 16]) == 25  # the checker itself, on a known case
    for p in _problems(MathKind.SEQUENCE_NEXT):
        m = re.fullmatch(r"(?:What is next in|What comes next:|What is the next term in) (.+)\?", p.question)
        assert m, p.question
        assert _extrapolate([int(t) for t in m.group(1).split(", ")]) == int(p.answer), p


def test_format_poly_round_trips_through_sympy():
    rng = random.Random(1)
    x = sympy.Symbol("x")
    for _ in range(200):
        poly = {p: rng.randint(-3, 3) for p in range(rng.randint(0, 5))}
        poly = {p: c for p, c in poly.items() if c}
        parsed = sympy.Poly(_expr(format_poly(poly, "x")), x) if poly else sympy.Poly(0, x)
        assert {m[0]: int(c) for m, c in parsed.terms() if c} == poly
    assert format_poly({2: -1, 1: 1, 0: -7}, "x") == "-x**2 + x - 7"
    assert format_poly({}, "x") == "0"
    assert poly_compose({2: 1}, {1: 1, 0: 1}) == {2: 1, 1: 2, 0: 1}  # (x + 1)**2


def test_documents_are_deterministic_and_mix_kinds():
    first = [d for d, _ in zip(math_documents(random.Random(3)), range(30))]
    again = [d for d, _ in zip(math_documents(random.Random(3)), range(30))]
    other = [d for d, _ in zip(math_documents(random.Random(4)), range(30))]
    assert first == again and first != other
    text = "\n".join(first)
    assert text.count("Question: ") == text.count("Answer: ") > 90
    assert "\n\n" not in text
    for needle in ("derivative", "What is next", "for", " and "):
        assert needle in text


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        generate_problem(random.Random(0), "calculus")
