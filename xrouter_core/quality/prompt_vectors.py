"""Write the `--vectors` file of `evaluate --router linear`: one vector per prompt of every source.

    python -m xrouter_core.quality.prompt_vectors --model2vec DIR --out vectors.npz
    python -m xrouter_core.quality.prompt_vectors --sentence-transformers DIR --out minilm.npz

DIR is a local model directory: a model2vec static model (`StaticModel.from_pretrained`,
for instance one made with `model2vec.distill`) or a sentence-transformers model. Each
prompt is embedded as the router's classifier sees it (`routed_text`), and stored under
`linear_head.vector_key` of that text. The libraries are not dependencies of the project:
install the one you use (`pip install model2vec` or `sentence-transformers`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xrouter_core.quality import linear_head, sources
from xrouter_core.quality.routellm_data import routed_text


def texts() -> list[str]:
    """Every deduplicated source's prompts as the classifier sees them, once each."""
    found = (routed_text(row.prompt) for rows in sources.load_all().values() for row in rows)
    return list(dict.fromkeys(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.prompt_vectors",
        description=(__doc__ or "").split("\n")[0],
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model2vec", type=Path, help="a model2vec model directory")
    which.add_argument("--sentence-transformers", type=Path, help="a sentence-transformers dir")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import numpy as np

    wanted = texts()
    began = time.perf_counter()
    if args.model2vec is not None:
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(str(args.model2vec))
        matrix = model.encode(wanted, max_length=args.max_tokens, batch_size=1024)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(args.sentence_transformers), device="cpu")
        model.max_seq_length = args.max_tokens
        matrix = model.encode(wanted, batch_size=64, normalize_embeddings=True)
    vectors = {
        linear_head.vector_key(text): np.asarray(row, dtype=np.float32)
        for text, row in zip(wanted, matrix, strict=True)
    }
    np.savez(args.out, **vectors)
    seconds = time.perf_counter() - began
    print(f"wrote {args.out}: {len(vectors)} vectors in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
