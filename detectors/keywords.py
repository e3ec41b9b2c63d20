"""Keyword spotting in transcripts: whole words or phrases, case- and diacritics-insensitive."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def fold(text: str) -> str:
    """Lower-case, strip diacritics and punctuation, collapse spaces: 'Café, ÉTÉ!' → 'cafe ete'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w\s']|_", " ", stripped).replace("'", "").split())


class KeywordSpotter:
    """Finds configured keywords (single words or phrases) in text, as whole words."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._keywords = {keyword: fold(keyword) for keyword in keywords if fold(keyword)}
        self._patterns = {
            keyword: re.compile(rf"(?<!\w){re.escape(folded)}(?!\w)") for keyword, folded in self._keywords.items()
        }

    @property
    def keywords(self) -> list[str]:
        return list(self._keywords)

    def find(self, text: str) -> list[str]:
        """The configured keywords present in `text`, in configuration order."""
        folded = fold(text)
        return [keyword for keyword, pattern in self._patterns.items() if pattern.search(folded)]
