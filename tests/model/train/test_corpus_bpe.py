import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.model.train import bpe, corpus


def test_collect_skips_third_party_generated_and_doc_copies(tiny_roots):
    docs = corpus.collect_documents(*tiny_roots)
    names = {d.name for d in docs}
    assert sum(d.kind == "docs" for d in docs) == 40 and sum(d.kind == "code" for d in docs) == 40
    assert "stdlib/pkg0/mod0.py" in names and "docs/section0/page0.rst.txt" in names
    assert not any("site-packages" in n or "pydoc_data" in n or "cp999" in n for n in names)
    assert [d.name for d in docs] == [d.name for d in corpus.collect_documents(*tiny_roots)]  # stable order


def test_split_is_by_document_name_and_fixed(tiny_roots):
    docs = corpus.collect_documents(*tiny_roots)
    split = corpus.split_documents(docs, 0.25)
    held = {d.name for k in ("heldout_docs", "heldout_code") for d in split[k]}
    assert held == {d.name for d in docs if corpus.is_heldout(d.name, 0.25)}
    assert held and len(split["train"]) + len(held) == len(docs)
    assert not held & {d.name for d in split["train"]}
    # A file's side does not depend on which other files exist.
    assert corpus.is_heldout("docs/library/stdtypes.rst.txt", 0.05) == corpus.is_heldout(
        "docs/library/stdtypes.rst.txt", 0.05)


def test_bad_roots_and_fractions_name_the_flag(tmp_path, tiny_roots):
    with pytest.raises(ConfigError, match="--docs-root") as e:
        corpus.collect_documents(tmp_path / "nope", tiny_roots[1])
    assert "install the Debian package python3.11-doc" in str(e.value)
    with pytest.raises(ConfigError, match="--heldout-frac"):
        corpus.split_documents(corpus.collect_documents(*tiny_roots), 0.7)
    with pytest.raises(ConfigError, match="--vocab-size"):
        bpe.train_tokenizer(["x"], 100)


def test_tokenizer_splits_digits_and_has_eos(tiny_tokenizer):
    enc = tiny_tokenizer.encode("pass key 71432")
    assert enc.tokens[-5:] == list("71432")
    assert tiny_tokenizer.decode(enc.ids) == "pass key 71432"
    assert bpe.eos_id(tiny_tokenizer) == 0


def test_saved_tokenizer_loads_in_transformers_with_same_ids(tmp_path, tiny_tokenizer):
    transformers = pytest.importorskip("transformers")
    bpe.save_tokenizer(tiny_tokenizer, tmp_path, 128)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "The list type 12345\n    def f(x):\n        return x"
    assert auto(text)["input_ids"] == tiny_tokenizer.encode(text).ids
    assert auto.eos_token == bpe.EOS_TOKEN and auto.eos_token_id == 0


def test_shipped_heldout_text_is_the_split_rule_and_its_readme_lists_it():
    docs = corpus.shipped_heldout_documents()
    names = [d.name for d in docs]
    assert names == sorted(names) and all(corpus.is_heldout(n, corpus.SHIPPED_HELDOUT_FRAC) for n in names)
    readme = (corpus.SHIPPED_HELDOUT_ROOT / "README.md").read_text(encoding="utf-8")
    assert [f"docs/{line[3:-1]}" for line in readme.splitlines() if line.startswith("* `")
            and line.endswith(".txt`")] == names
    # A smaller split keeps only what it holds out; one that holds out nothing is an error.
    smaller = [d.name for d in corpus.shipped_heldout_documents(0.02)]
    assert smaller == [n for n in names if corpus.is_heldout(n, 0.02)] and 0 < len(smaller) < len(names)
    with pytest.raises(ConfigError, match="--heldout-frac"):
        corpus.shipped_heldout_documents(0.0)
