"""Words as the keyword index sees them: one tokenizer for ranking and for saying why a moment matched.

SQLite FTS5 ranks with its Porter tokenizer, so "shouted" finds a description saying
"shouting". The words shown as why a moment matched must be compared the same way, or the
ranking and its explanation disagree. `stems` asks SQLite's own tokenizer for them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

TOKENIZE = "porter unicode61 remove_diacritics 2"
"""The FTS5 tokenizer of the moment index's descriptions."""
WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = frozenset(
    WORD.findall(
        "a an and are as at be by for from has have in is it its of on or that the there this to was were will with"
    )
)
"""English words too common to rank by (Lucene's English stop words); dropped from a query that has others."""


def stems(texts: Sequence[str]) -> list[frozenset[str]]:
    """The stems of each text, as the moment index's tokenizer makes them."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE VIRTUAL TABLE texts USING fts5 (text, tokenize = '{TOKENIZE}')")
        db.execute("CREATE VIRTUAL TABLE terms USING fts5vocab (texts, 'instance')")
        db.executemany("INSERT INTO texts (rowid, text) VALUES (?, ?)", enumerate(texts))
        found: list[set[str]] = [set() for _ in texts]
        for term, row in db.execute("SELECT term, doc FROM terms"):
            found[row].add(term)
        return [frozenset(terms) for terms in found]
    finally:
        db.close()
