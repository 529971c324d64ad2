"""Tokenizer for selector text.

Words (label keys and the keywords ``in``, ``not``, ``contains``, ``starts``, ``ends``,
``with``, ``has``, ``all``, ``global``) use the same character class as libcalico-go's
tokenizer, ``[A-Za-z0-9_./-]``; which words are keywords depends on where the parser is, so
the lexer does not decide. String literals are quoted with ``'`` or ``"`` and, as in Calico,
have no escape sequences: a literal runs to the next matching quote.
"""

from enum import Enum
from typing import NamedTuple

from libcalico.selector.errors import SelectorError


class Kind(Enum):
    WORD = "word"
    STRING = "string"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    EQ = "=="
    NE = "!="
    NOT = "!"
    AND = "&&"
    OR = "||"
    EOF = "end"


class Token(NamedTuple):
    kind: Kind
    value: str  # the word, or a string literal's content (without quotes)
    position: int  # offset of the token's first character in the text
    end: int  # offset just past the token

    def describe(self, text: str) -> str:
        """Name this token for an error message."""
        if self.kind is Kind.EOF:
            return "end of selector"
        raw = text[self.position : self.end]
        if self.kind is Kind.STRING:
            return f"string {raw}"
        return f"'{raw}'"


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")

_SINGLE_CHAR_TOKENS = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "{": Kind.LBRACE,
    "}": Kind.RBRACE,
    ",": Kind.COMMA,
}

# Two-character operators, keyed by their first character.
_PAIRED_TOKENS = {"=": ("==", Kind.EQ), "&": ("&&", Kind.AND), "|": ("||", Kind.OR)}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an EOF token; raise SelectorError on bad input."""
    tokens: list[Token] = []
    append = tokens.append
    length = len(text)
    i = 0
    while True:
        while i < length and text[i].isspace():
            i += 1
        if i >= length:
            append(Token(Kind.EOF, "", length, length))
            return tokens
        char = text[i]
        if char in _WORD_CHARS:
            start = i
            while i < length and text[i] in _WORD_CHARS:
                i += 1
            append(Token(Kind.WORD, text[start:i], start, i))
        elif char == "'" or char == '"':
            close = text.find(char, i + 1)
            if close < 0:
                raise SelectorError(
                    f"unterminated string starting at position {i}: expected a closing {char}",
                    i,
                    text,
                )
            append(Token(Kind.STRING, text[i + 1 : close], i, close + 1))
            i = close + 1
        elif char in _SINGLE_CHAR_TOKENS:
            append(Token(_SINGLE_CHAR_TOKENS[char], char, i, i + 1))
            i += 1
        elif char == "!":
            if text.startswith("!=", i):
                append(Token(Kind.NE, "!=", i, i + 2))
                i += 2
            else:
                append(Token(Kind.NOT, "!", i, i + 1))
                i += 1
        elif char in _PAIRED_TOKENS:
            spelling, kind = _PAIRED_TOKENS[char]
            if not text.startswith(spelling, i):
                raise SelectorError(
                    f"unexpected '{char}' at position {i}: expected '{spelling}'", i, text
                )
            append(Token(kind, spelling, i, i + 2))
            i += 2
        else:
            raise SelectorError(
                f"unexpected character {char!r} at position {i}: "
                "expected a label key, operator, string or parenthesis",
                i,
                text,
            )
