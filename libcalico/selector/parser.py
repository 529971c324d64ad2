"""Recursive-descent parser from selector text to a syntax tree.

Grammar (``!`` binds tightest, then ``&&``, then ``||``)::

    selector   := <empty> | or_expr
    or_expr    := and_expr ("||" and_expr)*
    and_expr   := unary ("&&" unary)*
    unary      := "!"* primary
    primary    := "(" or_expr ")" | "all()" | "global()" | "has(" key ")" | key operation
    operation  := ("==" | "!=" | "contains" | "starts with" | "ends with") string
                | ("in" | "not in") "{" [string ("," string)* [","]] "}"
"""

from libcalico.selector.errors import SelectorError
from libcalico.selector.label_keys import label_key_problem
from libcalico.selector.lexer import Kind, Token, tokenize
from libcalico.selector.nodes import (
    AllNode,
    EqualsNode,
    GlobalNode,
    HasNode,
    InSetNode,
    Node,
    NotEqualsNode,
    StringMatchNode,
    make_and,
    make_not,
    make_or,
)

_EXPECT_OPERAND = "a label key, 'has(', 'all()', 'global()', '!' or '('"
_EXPECT_OPERATOR = "'==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with'"
_EXPECT_STRING = "a quoted string"
_FUNCTIONS = ("has", "all", "global")
# Parenthesis nesting limit, keeping recursion (here and when rendering or compiling the tree)
# well inside Python's stack; real selectors nest a few levels at most.
MAX_NESTING = 100


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            self.index += 1
        return token

    def fail(self, token: Token, expected: str) -> SelectorError:
        return SelectorError(
            f"unexpected {token.describe(self.text)} at position {token.position}: "
            f"expected {expected}",
            token.position,
            self.text,
        )

    def expect(self, kind: Kind, expected: str) -> Token:
        token = self.advance()
        if token.kind is not kind:
            raise self.fail(token, expected)
        return token

    def expect_word(self, word: str) -> None:
        token = self.advance()
        if token.kind is not Kind.WORD or token.value != word:
            raise self.fail(token, f"'{word}'")

    # -- grammar -------------------------------------------------------------------------

    def parse(self) -> Node:
        if self.peek().kind is Kind.EOF:
            return AllNode()  # Calico treats an empty selector as all().
        node = self.or_expr()
        token = self.peek()
        if token.kind is not Kind.EOF:
            raise self.fail(token, "'&&', '||' or end of selector")
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.peek().kind is Kind.OR:
            self.advance()
            operands.append(self.and_expr())
        return make_or(operands)

    def and_expr(self) -> Node:
        operands = [self.unary()]
        while self.peek().kind is Kind.AND:
            self.advance()
            operands.append(self.unary())
        return make_and(operands)

    def unary(self) -> Node:
        negations = 0
        while self.peek().kind is Kind.NOT:
            self.advance()
            negations += 1
        node = self.primary()
        return make_not(node) if negations % 2 else node

    def primary(self) -> Node:
        token = self.advance()
        if token.kind is Kind.LPAREN:
            if self.depth >= MAX_NESTING:
                raise SelectorError(
                    f"too many nested parentheses at position {token.position}: "
                    f"at most {MAX_NESTING} levels are allowed",
                    token.position,
                    self.text,
                )
            self.depth += 1
            node = self.or_expr()
            self.depth -= 1
            closing = self.peek()
            if closing.kind is not Kind.RPAREN:
                raise self.fail(closing, "'&&', '||' or ')'")
            self.advance()
            return node
        if token.kind is not Kind.WORD:
            raise self.fail(token, _EXPECT_OPERAND)
        if token.value in _FUNCTIONS and self.peek().kind is Kind.LPAREN:
            return self.function(token.value)
        return self.operation(self.label_key(token))

    def function(self, name: str) -> Node:
        self.advance()  # the "("
        node: Node
        if name == "has":
            node = HasNode(self.label_key(self.expect(Kind.WORD, "a label key")))
        else:
            node = AllNode() if name == "all" else GlobalNode()
        self.expect(Kind.RPAREN, "')'")
        return node

    def label_key(self, token: Token) -> str:
        problem = label_key_problem(token.value)
        if problem is not None:
            raise SelectorError(
                f"invalid label key '{token.value}' at position {token.position}: {problem}",
                token.position,
                self.text,
            )
        return token.value

    def operation(self, key: str) -> Node:
        token = self.advance()
        if token.kind is Kind.EQ:
            return EqualsNode(key, self.string())
        if token.kind is Kind.NE:
            return NotEqualsNode(key, self.string())
        if token.kind is not Kind.WORD:
            raise self.fail(token, _EXPECT_OPERATOR)
        word = token.value
        # libcalico-go also accepts the two-word operators written as one word
        # ("notin", "startswith", "endswith"); so do we.
        if word in ("not", "starts", "ends"):
            self.expect_word("in" if word == "not" else "with")
            word += "in" if word == "not" else "with"
        if word == "in":
            return InSetNode(key, self.string_set(), negated=False)
        if word == "notin":
            return InSetNode(key, self.string_set(), negated=True)
        if word == "contains":
            return StringMatchNode(key, "contains", self.string())
        if word == "startswith":
            return StringMatchNode(key, "starts with", self.string())
        if word == "endswith":
            return StringMatchNode(key, "ends with", self.string())
        raise self.fail(token, _EXPECT_OPERATOR)

    def string(self) -> str:
        return self.expect(Kind.STRING, _EXPECT_STRING).value

    def string_set(self) -> tuple[str, ...]:
        self.expect(Kind.LBRACE, "'{'")
        values: set[str] = set()
        expected = "a quoted string or '}'"
        # Like Calico, allow an empty set and a trailing comma.
        while self.peek().kind is Kind.STRING:
            values.add(self.advance().value)
            if self.peek().kind is not Kind.COMMA:
                expected = "',' or '}'"
                break
            self.advance()
        self.expect(Kind.RBRACE, expected)
        return tuple(sorted(values))


def parse_tree(text: str) -> Node:
    """Parse selector text into a syntax tree; raise SelectorError if it is malformed."""
    return _Parser(text).parse()
