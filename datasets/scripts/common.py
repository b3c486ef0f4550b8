"""Shared helpers for the data-stage converters (standard library only).

Every converter writes $DATA_STAGE/<source>.jsonl.gz with one JSON object per prompt:
  {"id", "source", "prompt", "strong", "weak", "models"?, "turns"?, "task"?, ...}
and returns a small stats dict that the converter prints (and that PROVENANCE.md quotes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

STAGE = Path(os.environ.get("DATA_STAGE", "data-stage"))
MIRROR = Path(os.environ.get("MIRROR_ROOT", "mirror"))

# ---------------------------------------------------------------------------
# Off-limits screening.
#
# The brief forbids MT-Bench questions (FastChat llm_judge / RouteLLM evals/mt_bench) and
# RouterBench's ARC-Challenge / MBPP / Winogrande test prompts, but also forbids fetching
# those sources, so no exact blocklist is available here.  What is done instead:
#   * whole tasks named like the blocked benchmarks are dropped (BLOCKED_TASK_RE), and
#   * any prompt containing one of the MT-Bench opening fragments below (written from
#     memory, normalised: lowercased, whitespace collapsed) is dropped.  Substring matching
#     on a fragment is stricter than the exact match the brief asks for, so anything an
#     exact blocklist would catch on these questions is caught here too, at the cost of
#     possibly dropping a few near-duplicates.
# ---------------------------------------------------------------------------
BLOCKED_TASK_RE = re.compile(
    r"(arc[\s_-]*c(hallenge)?\b|^arc$|mbpp|winogrande|mt[\s_-]*bench)", re.IGNORECASE
)

MT_BENCH_FRAGMENTS = [
    "compose an engaging travel blog post about a recent trip to hawaii",
    "draft a professional email seeking your supervisor's feedback",
    "imagine you are writing a blog post comparing two popular smartphone models",
    "write a persuasive email to convince your introverted friend",
    "describe a vivid and unique character, using strong imagery",
    "write a descriptive paragraph about a bustling marketplace",
    "could you write a captivating short story beginning with the sentence",
    "craft an intriguing opening paragraph for a fictional short story",
    "help me construct a catchy, yet scientifically accurate, headline",
    "edit the following paragraph to correct any grammatical errors",
    "pretend yourself to be elon musk",
    "embrace the role of sheldon from",
    "imagine yourself as a doctor tasked with devising innovative remedies",
    "please take on the role of a relationship coach",
    "please assume the role of an english translator",
    "now you are a machine learning engineer. your task is to explain complex",
    "act as a math teacher. i will provide some mathematical equations",
    "embody the persona of tony stark",
    "suppose you are a mathematician and poet",
    "picture yourself as a 100-years-old tree",
    "imagine you are participating in a race with a group of people",
    "you can see a beautiful red house to your left",
    "thomas is very healthy, but he has to go to the hospital every day",
    "david has three sisters. each of them has one brother",
    "at a small company, parking spaces are reserved for the top executives",
    "each problem consists of three statements. based on the first two statements",
    "a is the father of b. b is the father of c",
    "which word does not belong with the others?",
    "one morning after sunrise, suresh was standing facing a pole",
    "parents have complained to the principal about bullying during recess",
    "the vertices of a triangle are at points (0, 0), (-1, 1), and (3, 3)",
    "a tech startup invests $8000 in software development",
    "in a survey conducted at a local high school, preferences for a new school color",
    "when rolling two dice, what is the probability that you roll a total number",
    "some people got on a bus at the terminal",
    "x+y = 4z, x*y = 4z^2",
    "how many integers are in the solution of the inequality |x + 5| < 10",
    "when a number is divided by 10, the remainder is 4",
    "benjamin went to a bookstore and purchased a variety of books",
    "given that f(x) = 4x^3 - 9x - 14",
    "develop a python program that reads all the text files under a directory",
    "write a c++ program to find the nth fibonacci number using recursion",
    "write a simple website in html. when a user clicks the button",
    "here is a python function to find the length of the longest common subsequence",
    "write a function to find the highest common ancestor (not lca)",
    "implement a function to find the median of two sorted arrays of different sizes",
    "write a function to find the majority element in a given integer array using the boyer-moore",
    "a binary tree is full if all of its vertices have either zero or two children",
    "you are given two sorted lists of size m and n",
    "implement a program to find the common elements in two arrays without using any extra data structures",
    "evaluate the following movie reviews on a scale of 1 to 5",
    "given these categories - literature, history, science, and art",
    "extract the following information from the presented texts: the name of the book",
    "given the following data, identify the company with the highest profit in 2021",
    "identify the countries, their capitals, and the languages spoken in the following sentences",
    "please read the paragraph below and count how many times the words",
    "identify the named entities (people, organizations, locations) mentioned in the given news article",
    "analyze the following customer reviews from different sources for three different smartphones",
    "given a set of complex equations, extract all unique variable names from each equation",
    "given the following records of stock prices, extract the highest and lowest closing prices",
    "in the field of quantum physics, what is superposition",
    "consider a satellite that is in a circular orbit around the earth",
    "photosynthesis is a vital process for life on earth",
    "what is the central dogma of molecular biology",
    "describe the process and write out the balanced chemical equation for the reaction that occurs when solid calcium carbonate",
    "please explain the differences between exothermic and endothermic reactions",
    "the city of vega intends to build a bridge that will span the vegona river",
    "you have been tasked with designing a solar-powered water heating system",
    "please describe the concept of machine learning. could you elaborate on the differences between supervised",
    "how have the alps and rhine river influenced settlement and agriculture in western europe",
    "provide insights into the correlation between economic indicators such as gdp, inflation, and unemployment rates",
    "how do the stages of life shape our understanding of time and mortality",
    "discuss antitrust laws and their impact on market competition",
    "create a lesson plan that integrates drama, mime or theater techniques into a history class",
    "share ideas for adapting art masterpieces into interactive experiences for children",
    "explain what's base rate fallacy and list five specific examples",
    "what are some business etiquette norms when doing business in japan",
    "suggest five award-winning documentary films with brief background descriptions",
    "which methods did socrates employ to challenge the prevailing thoughts of his time",
    "write a persuasive email to convince your introverted friend, who dislikes public speaking",
    "describe five key principles in evaluating an argument in analytical writing",
]


def norm(text: str) -> str:
    """Whitespace-collapsed, lowercased text (the brief's matching normalisation)."""
    return " ".join(str(text).split()).lower()


_FRAGS = [norm(f) for f in MT_BENCH_FRAGMENTS]


def blocked_prompt(text: str) -> str | None:
    """The matching MT-Bench fragment if `text` looks like an MT-Bench question, else None."""
    t = norm(text)
    for f in _FRAGS:
        if f in t:
            return f
    return None


# ---------------------------------------------------------------------------
# git helpers (read-only on the bare mirrors made by the `fetch` tool)
# ---------------------------------------------------------------------------
def git_dir(owner_repo: str) -> Path:
    return MIRROR / owner_repo.replace("/", "+") / "repo"


def git(gd: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={gd}", *args], check=True, capture_output=True
    ).stdout


def git_show(gd: Path, commit: str, path: str) -> bytes:
    return git(gd, "show", f"{commit}:{path}")


def git_ls(gd: Path, commit: str, path: str) -> list[tuple[str, int | None]]:
    """(path, size or None when the blob is missing from the snapshot) under `path`."""
    out = git(gd, "ls-tree", "-r", "--long", commit, "--", path).decode()
    rows = []
    for line in out.splitlines():
        meta, name = line.split("\t", 1)
        size = meta.split()[3]
        rows.append((name, int(size) if size.isdigit() else None))
    return rows


def resolve(gd: Path, rev: str) -> str:
    return git(gd, "rev-parse", rev).decode().strip()


# ---------------------------------------------------------------------------
def stable_id(source: str, *parts: str) -> str:
    h = hashlib.sha256("\x1f".join([source, *parts]).encode("utf-8")).hexdigest()[:16]
    return f"{source}:{h}"


def hash_bucket(key: str, mod: int = 100) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % mod


def write_jsonl_gz(source: str, rows: list[dict]) -> Path:
    STAGE.mkdir(parents=True, exist_ok=True)
    path = STAGE / f"{source}.jsonl.gz"
    tmp = path.with_suffix(".tmp")
    # mtime=0 keeps the file byte-identical between reruns.
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            for r in rows:
                gz.write((json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return path


def summarise(source: str, rows: list[dict], extra: dict | None = None) -> dict:
    n = len(rows)
    both = [r for r in rows if r.get("strong") is not None and r.get("weak") is not None]
    gt = sum(1 for r in both if r["strong"] > r["weak"])
    lt = sum(1 for r in both if r["strong"] < r["weak"])
    stats = {
        "source": source,
        "rows": n,
        "rows_with_both_scores": len(both),
        "strong_gt_weak": gt,
        "strong_lt_weak": lt,
        "tie": len(both) - gt - lt,
        "frac_strong_gt_weak": round(gt / len(both), 4) if both else None,
        "mean_strong": round(sum(r["strong"] for r in both) / len(both), 4) if both else None,
        "mean_weak": round(sum(r["weak"] for r in both) / len(both), 4) if both else None,
    }
    path = STAGE / f"{source}.jsonl.gz"
    if path.exists():
        stats["bytes"] = path.stat().st_size
    if extra:
        stats.update(extra)
    STAGE.joinpath("stats").mkdir(exist_ok=True)
    with open(STAGE / "stats" / f"{source}.json", "w") as f:
        json.dump(stats, f, indent=1)
    json.dump(stats, sys.stdout, indent=1)
    print()
    return stats
