"""divsweep's data engine: string-rewrite rules, example generation, encoding, Parquet I/O.

>>> from data import DataSpec, generate
>>> ds = generate(DataSpec(n_instructions=100, examples_per_instruction=50, noop_fraction=0.5))
>>> ds.train.num_rows, ds.encoded("train").prompt_lens[:2]      # doctest: +SKIP

See ``docs/ARCHITECTURE.md`` ("data") for the contract other packages rely on. Modules:

- ``spec``: ``DataSpec``/``RuleFamily``/``TestSpec``/``MarkovSpec`` (validation, defaults, hash)
- ``families``: what ``k`` means for repeated/periodic/mirror strings; ``rules``: distinct,
  disjoint rule sets; ``examples``: planting x in z with exact counts; ``generate``: splits
- ``vocab``/``encode``: tokens and the ragged ``EncodedSplit``; ``markov``: Markov algorithms
- ``counting``: rule indices, no-op and occurrence counts per example
- ``io``: a dataset's tables as Parquet; ``dataset``: ``RewriteDataset``, ``load_dataset``;
  ``generate`` also holds the content-addressed cache, ``cached_generate``
- ``stats``/``cli``: summaries and ``python -m data``; ``errors``: the exception tree
"""

from data.dataset import RewriteDataset, load_dataset
from data.encode import EncodedSplit
from data.errors import DataError, DatasetMismatchError, SpecError
from data.generate import cached_generate, generate
from data.spec import DataSpec, MarkovSpec, RuleFamily, TestSpec, content_hash
from data.version import GENERATOR_VERSION
from data.vocab import Vocab

__all__ = [
    "GENERATOR_VERSION",
    "DataError",
    "DataSpec",
    "DatasetMismatchError",
    "EncodedSplit",
    "MarkovSpec",
    "RewriteDataset",
    "RuleFamily",
    "SpecError",
    "TestSpec",
    "Vocab",
    "cached_generate",
    "content_hash",
    "generate",
    "load_dataset",
]
