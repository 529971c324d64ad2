"""Selector language: operators, quoting, precedence, canonical form, IDs and errors."""

import random

import pytest

from libcalico.selector import NAMESPACE_LABEL, Selector, SelectorError, matches, parse

# (selector, label sets it matches, label sets it does not match)
OPERATOR_CASES = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "b"}]),
    ("a != 'b'", [{}, {"a": "c"}, {"c": "b"}], [{"a": "b"}]),
    ("a in {'x', 'y'}", [{"a": "x"}, {"a": "y"}], [{}, {"a": "z"}, {"b": "x"}]),
    ("a not in {'x', 'y'}", [{}, {"a": "z"}, {"b": "x"}], [{"a": "x"}, {"a": "y"}]),
    ("a in {}", [], [{}, {"a": ""}]),
    ("a not in {}", [{}, {"a": "x"}], []),
    ("has(a)", [{"a": ""}, {"a": "x"}], [{}, {"b": "a"}]),
    ("!has(a)", [{}, {"b": "a"}], [{"a": ""}]),
    ("! has(a)", [{}], [{"a": "x"}]),
    ("all()", [{}, {"a": "b"}], []),
    ("a contains 'ell'", [{"a": "hello"}, {"a": "ell"}], [{}, {"a": "help"}, {"b": "hello"}]),
    ("a starts with 'he'", [{"a": "hello"}, {"a": "he"}], [{}, {"a": "the"}, {"b": "he"}]),
    ("a ends with 'lo'", [{"a": "hello"}, {"a": "lo"}], [{}, {"a": "lob"}, {"b": "lo"}]),
    ("a contains ''", [{"a": ""}, {"a": "x"}], [{}]),
    ("!a == 'x'", [{}, {"a": "y"}], [{"a": "x"}]),
    ("!(a == 'x' && b == 'y')", [{}, {"a": "x"}, {"a": "x", "b": "z"}], [{"a": "x", "b": "y"}]),
    ("!!has(a)", [{"a": "1"}], [{}]),
    ("!!!has(a)", [{}], [{"a": "1"}]),
    ("!(!has(a) || has(b))", [{"a": "1"}], [{}, {"a": "1", "b": "2"}]),
    (
        "projectcalico.org/namespace == 'kube-system'",
        [{NAMESPACE_LABEL: "kube-system"}],
        [{NAMESPACE_LABEL: "default"}, {}],
    ),
    ("kubernetes.io/metadata.name in {'a'}", [{"kubernetes.io/metadata.name": "a"}], [{}]),
    ("app.kubernetes.io/Name_1 == 'v'", [{"app.kubernetes.io/Name_1": "v"}], [{}]),
]


@pytest.mark.parametrize(("text", "positives", "negatives"), OPERATOR_CASES)
def test_operator_semantics(
    text: str, positives: list[dict[str, str]], negatives: list[dict[str, str]]
) -> None:
    selector = parse(text)
    again = parse(selector.canonical)  # the canonical form must mean the same thing
    for labels in positives:
        assert selector.matches(labels), labels
        assert again.matches(labels), labels
    for labels in negatives:
        assert not selector.matches(labels), labels
        assert not again.matches(labels), labels


def test_global_matches_only_non_namespaced_label_sets() -> None:
    selector = parse("global()")
    assert selector.matches({})
    assert selector.matches({"role": "db"})
    assert not selector.matches({NAMESPACE_LABEL: "default"})
    assert parse("!global()").matches({NAMESPACE_LABEL: "default"})
    assert NAMESPACE_LABEL in selector.label_keys


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_selector_is_all(text: str) -> None:
    selector = parse(text)
    assert selector == parse("all()")
    assert selector.canonical == "all()"
    assert selector.matches({}) and selector.matches({"a": "b"})


def test_precedence_and_binds_tighter_than_or() -> None:
    selector = parse("a == 'x' || b == 'y' && c == 'z'")
    assert selector.canonical == '(a == "x" || (b == "y" && c == "z"))'
    assert selector.matches({"a": "x"})
    assert selector.matches({"b": "y", "c": "z"})
    assert not selector.matches({"b": "y"})
    grouped = parse("(a == 'x' || b == 'y') && c == 'z'")
    assert not grouped.matches({"a": "x"})
    assert grouped.matches({"a": "x", "c": "z"})


def test_not_binds_tighter_than_and() -> None:
    selector = parse("!has(a) && has(b)")
    assert selector.canonical == "(!has(a) && has(b))"
    assert selector.matches({"b": "1"})
    assert not selector.matches({"a": "1", "b": "1"})


def test_quoting_single_double_and_embedded_quotes() -> None:
    assert parse("a == 'x'") == parse('a == "x"')
    assert parse("a == '\"'").matches({"a": '"'})
    assert parse('a == "\'"').matches({"a": "'"})
    assert parse("a == '\"'").canonical == "a == '\"'"
    assert parse('a == "\'"').canonical == 'a == "\'"'
    # No escapes, as in Calico: a backslash is an ordinary character.
    assert parse(r"a == 'x\'").matches({"a": "x\\"})
    # Operators and parentheses inside strings are literal text.
    assert parse("a == '&& || ( ) !'").matches({"a": "&& || ( ) !"})
    members = parse('a in {"\'", \'"\', "c"}')
    assert all(members.matches({"a": v}) for v in ("'", '"', "c"))


def test_whitespace_is_insignificant() -> None:
    compact = parse("a=='x'&&!has(b)||c in{'1','2'}")
    spaced = parse("  a  ==  'x'\t&&\n! has( b )  ||  c   in  { '2' ,  '1' }  ")
    assert compact == spaced
    assert compact.canonical == '((a == "x" && !has(b)) || c in {"1", "2"})'


@pytest.mark.parametrize(
    ("texts", "canonical"),
    [
        (["a == 'x'", '(a == "x")', "((a=='x'))", "!!a == 'x'", "!(!(a == 'x'))"], 'a == "x"'),
        (
            ["a in {'z', 'x', 'y', 'x'}", 'a in {"x","y","z",}', "(a in {'y','z','x'})"],
            'a in {"x", "y", "z"}',
        ),
        (
            ["a == 'x' && b == 'y' && c == 'z'", "a == 'x' && (b == 'y' && c == 'z')"],
            '(a == "x" && b == "y" && c == "z")',
        ),
        (["(a == 'x' || b == 'y') || c == 'z'"], '(a == "x" || b == "y" || c == "z")'),
        (["a startswith 'p'", "a starts   with 'p'"], 'a starts with "p"'),
        (["a endswith 'p'"], 'a ends with "p"'),
        (["a notin {'p'}", "a not in {'p'}"], 'a not in {"p"}'),
        (["!(a == 'x')", "! a == 'x'"], '!a == "x"'),
        (["a!='\"'"], "a != '\"'"),
        (
            ["!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))"],
            '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})',
        ),
    ],
)
def test_canonical_form(texts: list[str], canonical: str) -> None:
    for text in texts:
        selector = parse(text)
        assert selector.canonical == canonical, text
        assert str(selector) == canonical
        assert parse(canonical).canonical == canonical  # round trip is stable
    assert len({parse(t) for t in texts}) == 1
    assert len({parse(t).unique_id for t in texts}) == 1


@pytest.mark.parametrize(
    ("text", "unique_id"),
    [
        # Test vectors from libcalico-go's parser tests: our IDs match Calico's.
        ("", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" (all() )", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ("! (has( b)||! has(a ))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
        ('! (a == "b"&&! c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ],
)
def test_unique_id_matches_calico(text: str, unique_id: str) -> None:
    assert parse(text).unique_id == unique_id


def test_unique_id_differs_for_different_selectors() -> None:
    assert parse("a == 'x'").unique_id != parse("a == 'y'").unique_id
    assert len(parse("a == 'x'").unique_id) == len("s:") + 38  # 28 bytes, unpadded base64


def test_selectors_compare_and_hash_by_canonical_form() -> None:
    first, second = parse("a=='x'"), parse(' a == "x" ')
    assert first == second and hash(first) == hash(second)
    assert first != parse("a == 'y'")
    assert first != "a == 'x'"
    assert sorted([parse("b == 'x'"), first])[0] == first
    assert repr(first) == "Selector('a == \"x\"')"


def test_parse_is_cached() -> None:
    assert parse("cached == 'yes'") is parse("cached == 'yes'")


def test_module_level_matches_helper() -> None:
    assert matches("a == 'x'", {"a": "x"})
    assert not matches("a == 'x'", {})


def test_label_keys() -> None:
    selector = parse("a == 'x' && (!has(b) || c not in {'1'}) && d contains 'e'")
    assert selector.label_keys == frozenset({"a", "b", "c", "d"})
    assert parse("all()").label_keys == frozenset()


@pytest.mark.parametrize(
    ("text", "restrictions"),
    [
        ("a == 'x'", {"a": frozenset({"x"})}),
        ("a in {'x', 'y'} && has(b)", {"a": frozenset({"x", "y"}), "b": None}),
        ("a == 'x' && a in {'x', 'y'}", {"a": frozenset({"x"})}),
        ("a == 'x' && a == 'y'", {"a": frozenset()}),
        ("a == 'x' || a == 'y'", {"a": frozenset({"x", "y"})}),
        ("a == 'x' || has(a)", {"a": None}),
        ("a == 'x' || b == 'y'", {}),
        ("!(a != 'x')", {"a": frozenset({"x"})}),
        ("!(a not in {'x'} || !has(b))", {"a": frozenset({"x"}), "b": None}),
        ("a starts with 'x'", {"a": None}),
        ("!has(a) && b != 'c' && all()", {}),
        ("!global()", {NAMESPACE_LABEL: None}),
    ],
)
def test_label_restrictions(text: str, restrictions: dict[str, frozenset[str] | None]) -> None:
    assert dict(parse(text).label_restrictions) == restrictions


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("a == 'x", 5, "unterminated string"),  # unterminated string
        ('"FOO', 0, "unterminated string"),
        ("\"FOO'", 0, "unterminated string"),
        ("a 'x'", 2, "expected '==', '!=', 'in'"),  # missing operator
        ("a", 1, "unexpected end of selector at position 1: expected '=='"),
        ("a b", 2, "expected '==', '!='"),
        ("(a == 'x'", 9, "expected '&&', '||' or ')'"),  # unbalanced parentheses
        ("((a == 'x')", 11, "expected '&&', '||' or ')'"),
        ("a == 'x')", 8, "unexpected ')' at position 8: expected '&&', '||' or end of selector"),
        (")", 0, "expected a label key"),
        ("()", 1, "expected a label key"),
        ("(", 1, "unexpected end of selector"),
        ("-a == 'x'", 0, "invalid label key '-a'"),  # bad keys
        ("a/b/c == 'x'", 0, "invalid label key"),
        ("Upper.Case/a == 'x'", 0, "lower-case DNS subdomain"),
        ("has(a.) && b == 'x'", 4, "invalid label key 'a.'"),
        ("x == 'y' && " + "k" * 64 + " == 'v'", 12, "longer than 63"),
        ("a == 'x' b", 9, "unexpected 'b' at position 9"),  # trailing garbage
        ("a == 'x' &", 9, "expected '&&'"),
        ("a == 'x' |", 9, "expected '||'"),
        ("a = 'x'", 2, "expected '=='"),
        ("a == b", 5, "expected a quoted string"),  # label on both sides
        ("'b1' == b", 0, "unexpected string 'b1'"),
        ("a in 'x'", 5, "expected '{'"),
        ("a in {'x' 'y'}", 10, "expected ',' or '}'"),
        ("a in {'x', ||", 11, "expected a quoted string or '}'"),
        ("a not on {'x'}", 6, "expected 'in'"),
        ("a starts 'x'", 9, "expected 'with'"),
        ("a like 'x'", 2, "unexpected 'like'"),
        ("!", 1, "unexpected end of selector"),
        ("has(foo) &&", 11, "unexpected end of selector"),
        ("has(a", 5, "expected ')'"),
        ("has()", 4, "expected a label key"),
        ("all(a)", 4, "expected ')'"),
        ("a == 'x' && %", 12, "unexpected character '%'"),
        ("a != ||", 5, "expected a quoted string"),
    ],
)
def test_error_positions(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.position == position, str(error)
    assert fragment in str(error), str(error)
    assert f"position {position}" in str(error)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert parse("(" * 100 + "has(a)" + ")" * 100).canonical == "has(a)"
    with pytest.raises(SelectorError) as caught:
        parse("(" * 101 + "has(a)" + ")" * 101)
    assert caught.value.position == 100
    assert parse("!" * 5001 + "has(a)").canonical == "!has(a)"


def test_function_names_can_be_label_keys() -> None:
    assert parse("has == 'x'").matches({"has": "x"})
    assert parse("all != 'x' && global in {'g'}").matches({"global": "g"})


# -- randomized: canonical form round-trips and preserves meaning -------------------------

_KEYS = ["a", "b", "c/x", "d"]
_VALUES = ["", "1", "2", "x'y", 'q"r']


def _random_literal(rng: random.Random) -> str:
    value = rng.choice(_VALUES)
    if "'" in value:
        return f'"{value}"'
    if '"' in value:
        return f"'{value}'"
    return rng.choice(["'{}'", '"{}"']).format(value)


def _random_term(rng: random.Random) -> str:
    key = rng.choice(_KEYS)
    choice = rng.randrange(10)
    if choice == 0:
        return rng.choice(["all()", "global()", f"has({key})", f"! has( {key} )"])
    if choice < 6:
        op = rng.choice(["==", "!=", "contains", "starts with", "ends with"])
        return f"{key} {op} {_random_literal(rng)}"
    members = ", ".join(_random_literal(rng) for _ in range(rng.randrange(4)))
    return f"{key} {rng.choice(['in', 'not in'])} {{{members}}}"


def random_selector_text(rng: random.Random, depth: int = 3) -> str:
    if depth == 0 or rng.random() < 0.3:
        return _random_term(rng)
    parts = [random_selector_text(rng, depth - 1) for _ in range(rng.randint(1, 3))]
    text = rng.choice([" && ", " || "]).join(parts)
    if rng.random() < 0.5:
        text = f"({text})"
    return ("!" if rng.random() < 0.2 else "") + (f"({text})" if text[0] != "(" else text)


def _evaluate_reference(text: str, labels: dict[str, str]) -> bool:
    """Independent, slow evaluation: walk the tree without the compiled matcher."""
    from libcalico.selector import nodes

    def walk(node: nodes.Node) -> bool:
        if isinstance(node, nodes.AndNode):
            return all(walk(op) for op in node.operands)
        if isinstance(node, nodes.OrNode):
            return any(walk(op) for op in node.operands)
        if isinstance(node, nodes.NotNode):
            return not walk(node.operand)
        if isinstance(node, nodes.AllNode):
            return True
        if isinstance(node, nodes.GlobalNode):
            return NAMESPACE_LABEL not in labels
        if isinstance(node, nodes.HasNode):
            return node.key in labels
        if isinstance(node, nodes.NotEqualsNode):
            return labels.get(node.key) != node.value
        if isinstance(node, nodes.InSetNode):
            return (labels.get(node.key) in node.values) != node.negated
        assert isinstance(node, nodes.EqualsNode | nodes.StringMatchNode)
        if node.key not in labels:
            return False
        value = labels[node.key]
        if isinstance(node, nodes.EqualsNode):
            return value == node.value
        if node.operator == "contains":
            return node.value in value
        if node.operator == "starts with":
            return value.startswith(node.value)
        assert node.operator == "ends with", node.operator
        return value.endswith(node.value)

    return walk(parse(text).root)


def test_random_selectors_round_trip_and_agree_with_reference() -> None:
    rng = random.Random(1234)
    for _ in range(400):
        text = random_selector_text(rng)
        selector = parse(text)
        again = parse(selector.canonical)
        assert again.canonical == selector.canonical, text
        assert again.unique_id == selector.unique_id
        for _ in range(10):
            labels = {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.6}
            expected = _evaluate_reference(text, labels)
            assert selector.matches(labels) == expected, (text, labels)
            assert again.matches(labels) == expected, (text, labels)
            if expected:
                for key, values in selector.label_restrictions.items():
                    assert key in labels, (text, labels)
                    assert values is None or labels[key] in values, (text, labels)


def test_selector_can_be_built_from_a_parsed_tree() -> None:
    # Selector wraps a parsed tree; build one via parse().
    selector = Selector(parse("a == 'x'").root)
    assert selector == parse("a == 'x'")
