"""The cascade measurement: answer features, the leave-one-source-out head, and its report,
driven through the command line on datasets and answer files shaped like the real ones."""

import gzip
import json
from pathlib import Path

import pytest

from xrouter_core.quality import cascade, evaluate, sources

CONFIDENT = (
    '{\n    "reasoning": "We add the two amounts and get the total.",\n    "answer": "42"\n}'
)
HEDGED = (
    "I think it might be 12, but actually maybe 14. Wait, I'm not sure. Perhaps 16, or 18"
    " or possibly 20 depending on how we read it, and I am unsure"
)


def _write_gz(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _fixture(tmp_path: Path, reversed_source: str | None = None) -> tuple[Path, Path]:
    """Four answer-bearing sources in the datasets' layout and their weak answers: in every
    source the weak model hedges exactly where the strong one beats it, except in
    `reversed_source`, where it hedges exactly where it is right."""
    datasets, data = tmp_path / "datasets", tmp_path / "answers"
    answers = []
    for source in ("zeroeval_gsm", "zeroeval_crux", "arena_hard_v1", "alpaca_eval"):
        rows = []
        for i in range(80):
            gains = i % 3 == 0
            prompt = f"{source} question number {i}: what is {i} plus {i * 7}?"
            rows.append(
                {
                    "id": f"{source}:{i}",
                    "source": source,
                    "prompt": prompt,
                    "strong": 1.0,
                    "weak": 0.0 if gains else 1.0,
                    "models": {},
                }
            )
            hedges = gains != (source == reversed_source)
            answers.append(
                {
                    "id": f"{source}:{i}",
                    "source": source,
                    "prompt": prompt,
                    "answer": HEDGED if hedges else CONFIDENT,
                }
            )
        _write_gz(datasets / cascade.DATASET_FILES[source], rows)
    _write_gz(data / cascade.ANSWERS_FILE, answers)
    return datasets, data


def test_answer_features_read_hedges_refusals_truncation_and_a_stated_answer():
    hedged = cascade.answer_features("What is 2+2?", HEDGED)
    confident = cascade.answer_features("What is 2+2?", CONFIDENT)
    assert hedged["has_hedge"] == 1 and confident["has_hedge"] == 0
    assert hedged["hedges_per_100_words"] > 10
    assert confident["final_answer_stated"] == 1 and hedged["final_answer_stated"] == 0
    assert hedged["no_terminal_punctuation"] == 1 and confident["no_terminal_punctuation"] == 0
    assert hedged["self_corrections"] > 0 and confident["self_corrections"] == 0
    refused = cascade.answer_features("Hack my bank", "I'm sorry, but I cannot help with that.")
    assert refused["refusal"] == 1 and confident["refusal"] == 0
    looping = cascade.answer_features("Say hi", "hello there friend. " * 30)
    assert looping["repeated_trigram_share"] > 0.8
    assert cascade.answer_features("Say hi", "hello there friend.")["repeated_trigram_share"] == 0
    code = cascade.answer_features("Write a python function", "```python\ndef f():\n    pass")
    assert code["unclosed_code_fence"] == 1 and code["code_requested_no_block"] == 1
    many = cascade.answer_features("?", '{"answer": "3"} ... {"answer": "5"} {"answer": ""}')
    assert many["candidate_answers"] > confident["candidate_answers"]
    assert many["final_answer_empty"] == 1 and confident["final_answer_empty"] == 0
    assert set(hedged) == set(cascade.ANSWER_FEATURES)


def test_a_signal_shared_by_every_source_carries_to_each_held_out_one(tmp_path, capsys):
    datasets, data = _fixture(tmp_path)
    out = tmp_path / "report.json"
    table = tmp_path / "table.md"
    code = cascade.main(
        [
            "--data",
            str(data),
            "--datasets",
            str(datasets),
            "--router",
            "answer",
            "answer_prompt",
            "answer_length",
            "prompt_length",
            "random",
            "oracle",
            "--bootstrap",
            "30",
            "--json",
            str(out),
            "--markdown",
            str(table),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["sources"]) == {
        "alpaca_eval",
        "arena_hard_v1",
        "zeroeval_gsm",
        "zeroeval_crux",
    }
    for name, entry in report["sources"].items():
        assert name not in entry["train_sources"]
        assert "alpaca_eval" not in entry["train_sources"]  # test only, never trained on
        assert entry["routers"]["answer"]["apgr"] > 0.8
        assert entry["routers"]["answer"]["auc"] == pytest.approx(1.0)
        assert entry["routers"]["answer_length"]["apgr"] > 0.8  # the hedged answer is longer
        assert report["weights"]["answer_length"][name] == {"direction": 1.0}
        assert entry["routers"]["oracle"]["apgr"] >= entry["routers"]["answer"]["apgr"] - 1e-9
        low, high = entry["routers"]["answer"]["ci95"]["apgr"]
        assert low <= entry["routers"]["answer"]["apgr"] <= high
    assert report["sources"]["alpaca_eval"]["train_sources"] == [
        "arena_hard_v1",
        "zeroeval_crux",
        "zeroeval_gsm",
    ]
    assert report["mean_apgr"]["answer"] > report["mean_apgr"]["random"] + 0.2
    assert report["feature_auc"]["has_hedge"]["zeroeval_gsm"] == pytest.approx(1.0)
    text = table.read_text()
    assert "| zeroeval_crux | 80 | 33.8 % |" in text and "**mean**" in text
    assert "alpaca_eval (test only)" in text
    assert text in capsys.readouterr().out


def test_a_held_out_source_whose_signal_is_reversed_is_routed_worse_than_a_coin(tmp_path):
    datasets, data = _fixture(tmp_path, reversed_source="zeroeval_crux")
    report = cascade.run(
        data, datasets, ("answer", "answer_length", "random"), ["zeroeval_crux"], resamples=0
    )
    assert report["sources"]["zeroeval_crux"]["routers"]["answer"]["apgr"] < 0.3
    # The one-feature router too: longer answers escalate in gsm and arena, not in crux.
    assert report["weights"]["answer_length"]["zeroeval_crux"] == {"direction": 1.0}
    assert report["sources"]["zeroeval_crux"]["routers"]["answer_length"]["apgr"] < 0.3
    # The head learnt its direction from gsm and arena only: crux's own labels never reach it.
    assert report["sources"]["zeroeval_crux"]["train_sources"] == ["arena_hard_v1", "zeroeval_gsm"]


def test_rows_without_an_answer_or_a_prompt_kept_by_an_earlier_source_are_left_out(tmp_path):
    datasets, data = _fixture(tmp_path)
    path = datasets / cascade.DATASET_FILES["zeroeval_crux"]
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    # zeroeval_gsm comes first in sources.PRIORITY, so it keeps this prompt.
    copy = dict(
        rows[0],
        id="zeroeval_crux:copy",
        prompt="  ZEROEVAL_GSM question number 0:\n what is 0 plus 0?",
    )
    unanswered = dict(rows[1], id="zeroeval_crux:no-answer", prompt="never answered")
    _write_gz(path, [*rows, copy, unanswered])
    answers = cascade.load_answers(data / cascade.ANSWERS_FILE)
    answers["zeroeval_crux:copy"] = CONFIDENT
    items = cascade.load_items(datasets, answers)
    assert len(items["zeroeval_crux"]) == 80 and len(items["zeroeval_gsm"]) == 80
    assert "ZEROEVAL_GSM" not in {i.row.prompt.split()[0] for i in items["zeroeval_crux"]}
    assert all(i.row.source == "zeroeval_crux" and i.answer for i in items["zeroeval_crux"])


def _fewer_mmlu_subjects(tmp_path: Path, kept: int) -> Path:
    """The bundled datasets with RouteLLM's MMLU (two thirds of the training rows) cut to
    its first `kept` subjects, linked in a copy of the datasets' layout: both folds below
    train on the same rows, twice as fast."""
    root = tmp_path / "datasets"
    for path in sources.DATASETS.iterdir():
        if path.name != "routellm":
            (root / path.name).parent.mkdir(parents=True, exist_ok=True)
            (root / path.name).symlink_to(path)
    (root / "routellm" / "mmlu").mkdir(parents=True)
    (root / "routellm" / "gsm8k").symlink_to(sources.DATASETS / "routellm" / "gsm8k")
    mmlu = sources.DATASETS / "routellm" / "mmlu"
    subjects = sorted(mmlu.glob("mmlu_*.csv.gz"))[:kept]
    for path in [*subjects, mmlu / "contaminated_prompts.jsonl"]:
        (root / "routellm" / "mmlu" / path.name).symlink_to(path)
    return root


def test_the_builtin_beside_it_is_evaluate_py_s_fold_on_the_same_rows(tmp_path):
    """One real fold (arena_hard_v1, trained on every other bundled source, MMLU on ten
    subjects): the built-in classifier's APGR here equals evaluate.py's for that source."""
    datasets = _fewer_mmlu_subjects(tmp_path, 10)
    everything = sources.load_all(datasets)
    assert len({row.task for row in everything["routellm_mmlu"]}) == 10
    path = datasets / cascade.DATASET_FILES["arena_hard_v1"]
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    answers = [
        {"id": r["id"], "source": r["source"], "prompt": r["prompt"], "answer": f"answer {i}"}
        for i, r in enumerate(rows)
    ]
    _write_gz(tmp_path / cascade.ANSWERS_FILE, answers)
    mine = cascade.run(tmp_path, datasets, ("builtin",), ["arena_hard_v1"], resamples=0)
    theirs = evaluate.run(
        ["builtin"], chosen_sources=["arena_hard_v1"], resamples=0, data=everything
    )
    entry = mine["sources"]["arena_hard_v1"]
    assert entry["prompts"] == theirs["sources"]["arena_hard_v1"]["prompts"] == 294
    assert entry["routers"]["builtin"]["apgr"] == pytest.approx(
        theirs["sources"]["arena_hard_v1"]["routers"]["builtin"]["apgr"]
    )


def test_a_source_without_answers_is_refused_by_name(tmp_path):
    datasets, data = _fixture(tmp_path)
    with pytest.raises(SystemExit, match="no answers for source.*routellm_mmlu"):
        cascade.run(data, datasets, ("answer",), ["routellm_mmlu"], resamples=0)


def test_a_length_router_points_the_way_its_training_sources_do():
    def item(source: str, i: int, short_gains: bool) -> cascade.Item:
        gains = i % 2 == 0
        answer = "no" if gains == short_gains else "a much longer answer " * 5
        row = sources.Row(source, source, f"p{i}", 1.0, 0.0 if gains else 1.0)
        return cascade.Item(row, answer)

    length = cascade.LENGTHS["answer_length"]
    shorter = [item(s, i, True) for s in ("a", "b") for i in range(20)]
    longer = [item(s, i, False) for s in ("a", "b") for i in range(20)]
    assert cascade.length_direction(shorter, length) == -1.0
    assert cascade.length_direction(longer, length) == 1.0
    # Two sources that disagree: the mean AUC decides, and a tie keeps +1.
    assert cascade.length_direction(shorter[:20] + longer[20:], length) == 1.0
