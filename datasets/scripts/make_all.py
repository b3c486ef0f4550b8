#!/usr/bin/env python3
"""Run every converter, then report cross-source prompt overlaps (normalised exact match)
into $DATA_STAGE/stats/overlaps.json.  Usage: python3 make_all.py"""

import gzip
import itertools
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import STAGE, norm

SCRIPTS = ["arena_hard_v1.py", "zeroeval.py", "llmrouter_dc.py", "alpaca_eval.py", "routellm.py"]


def main():
    for s in SCRIPTS:
        print(f"== {s}", flush=True)
        subprocess.run([sys.executable, str(HERE / s)], check=True, stdout=subprocess.DEVNULL)
    prompts = {}
    dup_within = {}
    for p in sorted(STAGE.glob("*.jsonl.gz")):
        src = p.name[: -len(".jsonl.gz")]
        seen = set()
        d = 0
        for line in gzip.open(p, "rt", encoding="utf-8"):
            t = norm(json.loads(line)["prompt"])
            d += t in seen
            seen.add(t)
        prompts[src] = seen
        dup_within[src] = d
    overlaps = {f"{a} & {b}": len(prompts[a] & prompts[b])
                for a, b in itertools.combinations(sorted(prompts), 2) if prompts[a] & prompts[b]}
    out = {"duplicate_prompts_within_source": dup_within, "cross_source_overlaps": overlaps,
           "bytes": {p.name: p.stat().st_size for p in sorted(STAGE.glob("*.jsonl.gz"))}}
    out["total_bytes"] = sum(out["bytes"].values())
    (STAGE / "stats" / "overlaps.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
