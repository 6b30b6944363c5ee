"""Token counts of chunks, in the ``cl100k_base`` encoding, offline.

Every chunk records how many tokens it holds. Counts use ``cl100k_base`` whatever the
strategy, so counts from different strategies compare. The encoding comes from the
``bpe-openai`` package, whose wheel bundles the tables (tiktoken would download them on
first use, and workers here have no network). It is loaded once per process on the
first count.
"""

from __future__ import annotations

import functools
from typing import Any

import bpe_openai

ENCODING_NAME = "cl100k_base"


@functools.cache
def _encoding() -> Any:
    return bpe_openai.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    """Return the number of ``cl100k_base`` tokens in ``text`` (special tokens as text)."""
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))
