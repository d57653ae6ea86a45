"""Fine-tuning tasks: counts match the dataset READMEs, errors name files, batches mask prompts."""

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sparselm.data.corpus import iter_documents
from sparselm.data.task_batches import IGNORE_INDEX, TaskBatches, build_sequence, subset_indices
from sparselm.data.tasks import SEP, TaskExample, format_completion, format_prompt, load_task
from sparselm.errors import ConfigError, DataError
from sparselm.tokenizer import EOT, train_bpe

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"


@pytest.fixture(scope="module")
def tok(data_dir):
    text = next(iter_documents("tiny_shakespeare", "train", data_dir))
    return train_bpe(text.splitlines(), vocab_size=512)


@pytest.mark.parametrize(
    "task, split, n_examples, n_refs",
    [
        ("e2e", "train", 42_061, None),
        ("e2e", "validation", 547, 4_672),
        ("e2e", "test", 630, 4_693),
        ("webnlg", "train", 18_102, None),
        ("webnlg", "test", 1_862, 4_928),
        ("dart", "validation", 2_721, 6_980),  # 2,768 entries, 2,721 distinct triple sets
    ],
)
def test_counts_match_readmes(task, split, n_examples, n_refs, data_dir):
    examples = load_task(task, split, data_dir)
    assert len(examples) == n_examples
    if n_refs is not None:  # evaluation: grouped by context, completion = first reference
        assert sum(len(e.references) for e in examples) == n_refs
        assert all(e.completion == e.references[0] for e in examples)
    else:  # training: one example per reference
        assert all(e.completion in e.references for e in examples)


def test_linearized_contexts(data_dir):
    e2e = load_task("e2e", "validation", data_dir)[0]
    assert e2e.context.startswith("name : ") and " | " in e2e.context and "||" not in e2e.context
    web = load_task("webnlg", "train", data_dir)[0]
    assert web.context == "Aarhus Airport : cityServed : Aarhus, Denmark"
    dart = load_task("dart", "validation", data_dir)[0]
    assert (
        dart.context == "Mars Hill College : joined : 1973 | Mars Hill College : location : "
        "Mars Hill, North Carolina"
    )


def test_dart_train_needs_split_map(data_dir):
    with pytest.raises(DataError, match="DART train.*task.split_map"):
        load_task("dart", "train", data_dir)


def test_dart_conf_split_map_has_no_leakage(data_dir):
    split_map = OmegaConf.to_container(OmegaConf.load(CONF / "dart.yaml").split_map)
    train = load_task("dart", "train", data_dir, split_map)
    val = load_task("dart", "validation", data_dir, split_map)
    assert train and val
    assert not {e.context for e in train} & {e.context for e in val}
    assert len({e.context for e in train}) + len(val) == 2_721


def test_bad_split_map_value(data_dir):
    with pytest.raises(DataError, match="'nope'.*train, valid, test"):
        load_task("e2e", "train", data_dir, {"train": "nope"})


def test_malformed_files_name_file_and_place(tmp_path):
    e2e = tmp_path / "e2e_nlg" / "lora_format"
    e2e.mkdir(parents=True)
    (e2e / "valid.txt").write_text("name : A||Fine . \nno separator here\n")
    with pytest.raises(DataError, match=r"valid\.txt:2"):
        load_task("e2e", "validation", tmp_path)
    web = tmp_path / "webnlg_2017" / "dev"
    web.mkdir(parents=True)
    (web / "bad.xml").write_text("<benchmark><entries><entry>")
    with pytest.raises(DataError, match=r"bad\.xml: invalid XML"):
        load_task("webnlg", "validation", tmp_path)
    dart = tmp_path / "dart"
    dart.mkdir()
    (dart / "dart-v1.1.1-full-dev.json").write_text('[{"triples": [], "annotations": []}]')
    with pytest.raises(DataError, match=r"full-dev\.json: record 0"):
        load_task("dart", "validation", tmp_path)


def test_missing_data_names_setting(tmp_path):
    with pytest.raises(DataError, match="SPARSELM_DATA_DIR"):
        load_task("webnlg", "train", tmp_path)


def test_prompt_format():
    assert format_prompt("a : b") == EOT + "a : b" + SEP
    assert format_completion("Text .") == " Text ."


def _examples(n: int) -> list[TaskExample]:
    # contexts and completions of different lengths, so batches need padding
    out = []
    for i in range(n):
        ref = f"Shop {i} is" + " very" * (i % 4) + " central ."
        out.append(TaskExample(f"name : Shop {i} | area : city centre", ref, (ref,)))
    return out


def _row_example(tok, x_row: torch.Tensor) -> int:
    match = re.search(r"name : Shop (\d+) \|", tok.decode(x_row.tolist()))
    assert match is not None
    return int(match.group(1))


def test_labels_mask_prompt_and_padding(tok):
    examples = _examples(40)
    batches = TaskBatches(examples, _examples(8), tok, seq_len=64, micro_batch_size=4, seed=0)
    x, y = batches.train_batch(0, 0)
    assert x.shape == y.shape and x.shape[1] <= 64
    lengths = []
    for row in range(x.shape[0]):
        ex = examples[_row_example(tok, x[row])]
        prompt = tok.encode(format_prompt(ex.context)).ids
        target = tok.encode(format_completion(ex.completion)).ids + [0]  # EOT id 0
        n = len(prompt) + len(target) - 1
        lengths.append(n)
        assert x[row, :n].tolist() == (prompt + target)[:-1]
        assert (y[row, : len(prompt) - 1] == IGNORE_INDEX).all()  # prompt positions masked
        assert y[row, len(prompt) - 1 : n].tolist() == target
        assert (x[row, n:] == 0).all() and (y[row, n:] == IGNORE_INDEX).all()  # padding
    assert x.shape[1] == max(lengths)  # padded to the longest in the batch, not seq_len


def test_batches_pure_and_epoch_cover(tok):
    a = TaskBatches(_examples(10), _examples(3), tok, 64, 5, seed=3, grad_accum=2)
    b = TaskBatches(_examples(10), _examples(3), tok, 64, 5, seed=3, grad_accum=2)
    assert torch.equal(a.train_batch(4, 1)[1], b.train_batch(4, 1)[1])
    for step in (0, 1):  # each epoch (one step of 2 x 5 samples) visits every example once
        seen = [_row_example(tok, r) for m in (0, 1) for r in a.train_batch(step, m)[0]]
        assert sorted(seen) == list(range(10))
    c = TaskBatches(_examples(10), _examples(3), tok, 64, 5, seed=4, grad_accum=2)
    orders = [[_row_example(tok, r) for r in t.train_batch(0, 0)[0]] for t in (a, c)]
    assert orders[0] != orders[1]
    with pytest.raises(ValueError):
        a.train_batch(0, 2)
    v = a.val_batches(4)
    assert len(v) == 1 and v[0][0].shape[0] == 3
    assert [_row_example(tok, r) for r in v[0][0]] == [0, 1, 2]


def test_left_truncation_keeps_bos_and_completion():
    tokens, n_prompt = build_sequence([0, 1, 2, 3, 4, 5], [7, 8, 0], seq_len=5)
    assert tokens == [0, 4, 5, 7, 8, 0] and n_prompt == 3


def test_fraction_subsets_are_deterministic_and_nested():
    small, large = subset_indices(1000, 0.1, 0), subset_indices(1000, 0.5, 0)
    assert len(small) == 100 and len(large) == 500
    assert set(small) <= set(large)
    assert subset_indices(1000, 0.1, 0).tolist() == small.tolist()
    assert subset_indices(1000, 0.1, 1).tolist() != small.tolist()
    assert len(subset_indices(10, 0.3, 0)) == 3 and len(subset_indices(7, 0.5, 0)) == 4
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="task.fraction"):
            subset_indices(10, bad, 0)


def test_fraction_applied(tok):
    batches = TaskBatches(_examples(50), _examples(2), tok, 64, 2, seed=0, fraction=0.2)
    assert batches.num_train_examples == 10
