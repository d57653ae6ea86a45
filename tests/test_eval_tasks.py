"""Our lm-eval tasks load offline, score with multi-reference metrics, and run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import save_tiny_run

from sparselm.errors import ConfigError, DataError
from sparselm.evaluation.run import TASKS_DIR, evaluate_checkpoint, flat_metrics, results_table
from sparselm.evaluation.tasks import nlg_metrics, utils
from sparselm.loading import resolve_checkpoint, weights_sha256
from sparselm.tokenizer import load_tokenizer

ZERO_SHOT = [
    "sparselm_hellaswag",
    "sparselm_lambada_openai",
    "sparselm_piqa",
    "sparselm_arc_easy",
    "sparselm_arc_challenge",
    "sparselm_openbookqa",
    "sparselm_boolq",
    "sparselm_winogrande",
    "sparselm_wikitext",
]
NLG = ["sparselm_e2e_nlg", "sparselm_webnlg", "sparselm_dart"]
TEXTS = [
    "name : The Eagle | Type : coffee shop || The Eagle is a coffee shop .\n",
    "Question: Which is a producer?\nAnswer: algae that use sunlight.",
] * 30


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("eval_tasks") / "run", TEXTS, block_size=64)


def test_task_folder_registers_every_task_and_group():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(ZERO_SHOT + NLG) <= set(manager.all_subtasks)
    assert {"sparselm_zeroshot", "sparselm_nlg"} <= set(manager.all_groups)
    for path in TASKS_DIR.glob("*.yaml"):  # no absolute path is committed
        assert "/work/" not in path.read_text()


@pytest.mark.parametrize(
    "loader, split, size",
    [
        ("load_piqa", "validation", 1838),
        ("load_arc_easy", "test", 2376),
        ("load_openbookqa", "test", 500),
        ("load_winogrande", "validation", 1267),
        ("load_wikitext", "test", 62),
        ("load_e2e_nlg", "test", 630),
    ],
)
def test_loaders_read_the_data_dir(data_dir, loader, split, size):
    dataset = getattr(utils, loader)(data_dir=str(data_dir), version=1.0)  # metadata kwargs
    assert len(dataset[split]) == size


def test_loader_names_the_missing_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSELM_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="SPARSELM_DATA_DIR"):
        utils.load_piqa()
    with pytest.raises(DataError, match="piqa"):
        utils.load_piqa(data_dir=str(tmp_path))


def test_nlg_metrics_use_every_reference():
    # the second output matches only its third reference; lm-eval's built-in aggregation would
    # drop it (it zips reference lists to the shortest one)
    items = [
        (["the eagle is a pub"], "the eagle is a pub"),
        (
            ["a b c d e", "f g h i j", "near the river there is a shop"],
            "near the river there is a shop",
        ),
    ]
    assert nlg_metrics.corpus_bleu(items) == pytest.approx(100.0)
    assert nlg_metrics.corpus_chrf(items) == pytest.approx(100.0)
    assert nlg_metrics.corpus_ter(items) == pytest.approx(0.0)
    assert nlg_metrics.mean_rouge_l(items) == pytest.approx(100.0)
    doc = {"references": ["x y", "z"]}
    assert nlg_metrics.process_results(doc, [" x y "])["bleu"] == (["x y", "z"], "x y")


@pytest.mark.slow
def test_evaluate_checkpoint_end_to_end(run_dir, data_dir, tmp_path):
    results = evaluate_checkpoint(
        run_dir,
        ["sparselm_arc_easy", "sparselm_e2e_nlg"],
        data_dir,
        limit=5,
        batch_size=8,
        device="cpu",
        gen_overrides={"num_beams": 2, "max_gen_toks": 16},
        seed=7,
        generations_dir=tmp_path / "generations",
    )
    ckpt = resolve_checkpoint(run_dir)
    assert results["weights_sha256"] == weights_sha256(ckpt)
    assert results["checkpoint"] == str(ckpt) and results["limit"] == 5
    assert results["versions"] == {"sparselm_arc_easy": 1.0, "sparselm_e2e_nlg": 1.0}
    assert {t: n["effective"] for t, n in results["n-samples"].items()} == {
        "sparselm_arc_easy": 5,
        "sparselm_e2e_nlg": 5,
    }
    gen = results["generation"]["sparselm_e2e_nlg"]
    assert (gen["num_beams"], gen["max_gen_toks"]) == (2, 16)  # overrides
    assert (gen["length_penalty"], gen["no_repeat_ngram_size"], gen["until"]) == (0.9, 4, ["\n"])
    assert set(results["results"]["sparselm_arc_easy"]) >= {"acc,none", "acc_norm,none"}
    assert set(results["results"]["sparselm_e2e_nlg"]) >= {
        "bleu,none",
        "rougeL,none",
        "chrf,none",
        "ter,none",
    }
    assert results["lm_eval_version"] and results["seed"] == 7
    table = results_table(results)
    assert len(table) == 6 and set(table.metric) == {
        "acc",
        "acc_norm",
        "bleu",
        "rougeL",
        "chrf",
        "ter",
    }
    json.dumps(results, allow_nan=False)  # results.json must be plain JSON
    # prompts that alone fill the 64-token window are left-cut, and counted
    docs = utils.load_e2e_nlg(str(data_dir))["test"]
    tok = load_tokenizer(run_dir / "tokenizer.json")
    too_long = sum(len(tok.encode(docs[i]["prompt"]).ids) > 63 for i in range(5))
    assert results["truncated_requests"] == {"sparselm_arc_easy": 0, "sparselm_e2e_nlg": too_long}
    # every generation is saved beside the results: input, output, references
    assert results["generations_files"] == {
        "sparselm_e2e_nlg": "generations/sparselm_e2e_nlg.jsonl"
    }
    lines = (tmp_path / "generations" / "sparselm_e2e_nlg.jsonl").read_text().splitlines()
    saved = [json.loads(line) for line in lines]
    assert [r["doc_id"] for r in saved] == list(range(5))
    for record in saved:
        doc = docs[record["doc_id"]]
        assert record["input"] == doc["prompt"] and record["references"] == doc["references"]
        assert isinstance(record["output"], str)


@pytest.mark.slow
def test_cli_writes_results_and_metrics_last(run_dir, data_dir, tmp_path, monkeypatch):
    from sparselm.cli.evaluate import main

    monkeypatch.setenv("SPARSELM_DATA_DIR", str(data_dir))
    out = tmp_path / "eval"
    assert (
        main(
            [
                f"checkpoint={run_dir}",
                "tasks=[sparselm_piqa]",
                "limit=2",
                "logger=none",
                f"hydra.run.dir={out}",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == flat_metrics(results) and set(metrics) == {
        "sparselm_piqa/acc",
        "sparselm_piqa/acc_norm",
        "sparselm_piqa/truncated_requests",
    }
    assert (out / "results.csv").read_text().startswith("task,metric,filter,value")
    assert "checkpoint:" in (out / "config.yaml").read_text()
    assert (out / "metrics.json").stat().st_mtime_ns >= (out / "results.json").stat().st_mtime_ns


def test_cli_refuses_bad_input(tmp_path):
    from sparselm.cli.evaluate import main

    with pytest.raises(ConfigError, match="checkpoint"):
        main([f"hydra.run.dir={tmp_path}"])
    with pytest.raises(ConfigError, match="do_sample"):
        main([f"checkpoint={tmp_path}", "+generation.do_sample=true", f"hydra.run.dir={tmp_path}"])
