"""A seeded "synthetic web": the embedded default corpus that `make demo` runs on.

Every document is generated here (no copied text) and carries its ground truth
in ``metadata.truth`` so each filter's precision and recall can be measured:

- ``clean``: English prose from a small probabilistic grammar over topic
  vocabularies: varied, punctuated, paragraphs of full sentences.
- ``boilerplate``: navigation menus, cookie banners, footers, share buttons.
- ``keyword_spam``: SEO keyword stuffing.
- ``repeated_lines``: a few lines repeated many times.
- ``gibberish``: random syllables and symbol noise.
- ``truncated``: fragments of a few words.
- ``foreign``: prose in German, French, Spanish, Italian, Dutch, Portuguese,
  Swedish or Polish, built from real function words and common words of each
  language so that a real language-ID model recognises it.
- exact duplicates (``dup_kind: exact``) and near duplicates (``dup_kind:
  near``) of clean documents, with the true 5-gram Jaccard similarity measured
  and recorded.

The same seed gives the same bytes (gzip headers carry no timestamp).
"""
from __future__ import annotations

import gzip
import io
import json
import random
import re
from pathlib import Path

# ---------------------------------------------------------------------------
# English grammar vocabularies (written for this project)

DETS = ["the", "a", "this", "that", "every", "one", "another", "each", "some", "no"]
PLURAL_DETS = ["the", "some", "many", "several", "these", "those", "few", "most", "all the", "two"]

TOPICS = {
    "science": {
        "nouns": "researcher sample experiment theory particle molecule cell organism laboratory telescope planet "
                 "measurement hypothesis protein enzyme crystal signal detector climate glacier ocean current "
                 "fossil species genome microscope reaction catalyst orbit comet mineral neuron".split(),
        "adjs": "careful precise microscopic stable unexpected measurable chemical biological thermal faint "
                "distant magnetic fragile ancient dense".split(),
    },
    "cooking": {
        "nouns": "recipe kitchen oven onion garlic sauce bread dough butter pepper soup pan skillet flour lemon "
                 "tomato cheese herb spice dish dinner breakfast baker chef stew salad vinegar broth crust".split(),
        "adjs": "crisp tender savory golden fresh bitter sweet smoky creamy spicy warm rustic simple hearty "
                "fragrant".split(),
    },
    "travel": {
        "nouns": "village harbor train station valley mountain island road map traveler guide market bridge "
                 "museum cathedral coast ferry hostel trail border passport luggage journey castle square "
                 "lighthouse canyon desert river".split(),
        "adjs": "narrow crowded quiet remote scenic steep sunny foggy colorful historic busy distant charming "
                "windy green".split(),
    },
    "history": {
        "nouns": "empire kingdom treaty archive manuscript monarch general rebellion merchant colony senate "
                 "chronicle dynasty fortress battle peasant guild harbor city council scholar reform tax "
                 "coin temple ruler army province letter".split(),
        "adjs": "medieval royal powerful forgotten bitter prosperous rural loyal fragile ambitious costly "
                "sudden lasting famous obscure".split(),
    },
    "technology": {
        "nouns": "computer network server program database engineer interface processor battery sensor "
                 "algorithm device screen cable keyboard protocol compiler memory chip robot software update "
                 "platform website startup camera antenna circuit".split(),
        "adjs": "digital reliable wireless efficient portable complex modern faster secure cheap experimental "
                "compact silent automated powerful".split(),
    },
    "sports": {
        "nouns": "team coach player match season stadium referee goal tournament runner league championship "
                 "trainer captain fan ball racket bicycle marathon pitch swimmer keeper score victory defeat "
                 "training rival crowd medal".split(),
        "adjs": "young talented tired confident narrow dramatic defensive quick loyal disappointed strong "
                "veteran nervous brilliant final".split(),
    },
}

COMMON_NOUNS = ("problem question idea plan report decision story answer reason result change method choice "
                "family community friend neighbor teacher student farmer writer doctor parent child worker "
                "government company school library hospital office garden window morning evening winter summer "
                "weekend afternoon year century moment experience history future evidence detail pattern "
                "picture language opinion argument memory habit").split()

COMMON_ADJS = ("new old small large important different early late careful simple difficult public private "
               "local common strange quiet serious happy honest useful popular rare clear dark bright heavy "
               "light careful patient curious").split()

VERBS_T = ("described examined built repaired studied found visited opened closed carried prepared changed "
           "improved tested measured discovered followed reviewed cleaned painted shared explained questioned "
           "defended moved collected planned recorded replaced supported protected watched").split()

VERBS_I = ("arrived waited disappeared improved changed vanished returned grew failed continued recovered "
           "hesitated laughed agreed slept worked traveled collapsed survived paused").split()

VERBS_SAY = "argued claimed noticed believed suggested explained admitted insisted remembered reported realized".split()

ADVERBS = ("slowly quickly carefully quietly suddenly eventually finally rarely often gently patiently "
           "barely clearly nearly almost certainly probably honestly recently").split()

PREPS = "near behind beside under above across through along inside outside after before without during around".split()

CONNECT = ["However,", "Meanwhile,", "Later that year,", "In the end,", "For a while,", "At first,",
           "Even so,", "By then,", "Afterwards,", "In practice,", "For this reason,", "Still,"]

CONJ = ["and", "but", "so", "because", "although", "while", "until", "since"]

NAMES = ("Maria Jonas Aiko Samuel Priya Tomas Elena Omar Greta Lucas Nadia Felix Ingrid Rafael Hana Victor "
         "Clara Mateo Zara Anton").split()


def _plural(n: str) -> str:
    if n.endswith(("s", "x", "ch", "sh")):
        return n + "es"
    if n.endswith("y") and n[-2] not in "aeiou":
        return n[:-1] + "ies"
    return n + "s"


class EnglishGrammar:
    """A small probabilistic grammar; sentences are varied enough to pass repetition filters."""

    def __init__(self, rng: random.Random, topic: str):
        self.r = rng
        t = TOPICS[topic]
        self.nouns = t["nouns"] * 2 + COMMON_NOUNS
        self.adjs = t["adjs"] * 2 + COMMON_ADJS

    def np(self, allow_pp: bool = True) -> str:
        r = self.r
        if r.random() < 0.12:
            return r.choice(NAMES)
        plural = r.random() < 0.3
        noun = r.choice(self.nouns)
        det = r.choice(PLURAL_DETS if plural else DETS)
        words = [det]
        if r.random() < 0.45:
            words.append(r.choice(self.adjs))
        words.append(_plural(noun) if plural else noun)
        if words[0] == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        if allow_pp and r.random() < 0.25:
            words += [r.choice(PREPS), self.np(allow_pp=False)]
        return " ".join(words)

    def vp(self, depth: int) -> str:
        r = self.r
        x = r.random()
        if x < 0.5:
            out = f"{r.choice(VERBS_T)} {self.np()}"
        elif x < 0.7:
            out = r.choice(VERBS_I)
        elif x < 0.85 and depth < 1:
            out = f"{r.choice(VERBS_SAY)} that {self.clause(depth + 1)}"
        else:
            out = f"{r.choice(VERBS_T)} {self.np()} {r.choice(PREPS)} {self.np(False)}"
        if r.random() < 0.25:
            out = f"{r.choice(ADVERBS)} {out}" if r.random() < 0.5 else f"{out} {r.choice(ADVERBS)}"
        return out

    def clause(self, depth: int = 0) -> str:
        return f"{self.np()} {self.vp(depth)}"

    def sentence(self) -> str:
        r = self.r
        s = self.clause()
        if r.random() < 0.35:
            s += f", {r.choice(CONJ)} {self.clause(1)}"
        if r.random() < 0.2:
            s = f"{r.choice(CONNECT)} {s}"
        s = s[0].upper() + s[1:]
        return s + ("?" if r.random() < 0.04 else ".")

    def paragraph(self, n: int) -> str:
        return " ".join(self.sentence() for _ in range(n))

    def document(self, n_paragraphs: int) -> str:
        return "\n\n".join(self.paragraph(self.r.randint(3, 7)) for _ in range(n_paragraphs))


# ---------------------------------------------------------------------------
# junk kinds

NAV = ["Home", "About us", "Contact", "Blog", "Shop", "News", "Login", "Sign up", "FAQ", "Careers", "Press",
       "Support", "Privacy", "Terms", "Sitemap", "Cart", "Account", "Search", "Menu", "Events"]
BANNERS = [
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Accept all cookies", "Manage preferences", "Subscribe to our newsletter", "Share on social media",
    "All rights reserved.", "Skip to main content", "Back to top", "Click here to read more",
    "Log in to leave a comment", "Follow us", "Related posts", "Previous page", "Next page",
    "Powered by a content management system", "Your cart is empty", "Free shipping on orders over 50",
]
SPAM_WORDS = ["cheap", "best", "buy", "discount", "online", "free", "deal", "sale", "price", "offer", "top",
              "casino", "loans", "pills", "watches", "replica", "bonus", "win", "fast", "now"]
SYLLABLES = ["ka", "zu", "xo", "qri", "mbe", "tsa", "vlo", "gha", "pte", "zzy", "kro", "fne", "yth", "oq"]

FOREIGN = {
    "de": ("der die das und ist nicht mit auf für von zu den ein eine sich auch es als wir sie ich habe wird "
           "werden kann haben über nach bei aus noch nur wie aber oder wenn schon sehr immer heute Jahr "
           "Stadt Menschen Zeit Kinder Arbeit Leben Haus Geschichte gibt waren wurde zwischen unter"),
    "fr": ("le la les et est une un des du de dans pour pas sur avec qui que il elle nous vous sont mais "
           "plus par comme tout fait été cette aussi bien avoir leur même encore temps ville année "
           "travail maison enfants histoire toujours depuis entre aujourd'hui beaucoup"),
    "es": ("el la los las y es un una de del en que por con para no se su al lo como más pero sus le ya "
           "muy también fue han hay ser este esta entre cuando todo año ciudad tiempo trabajo casa niños "
           "historia siempre desde hoy mucho"),
    "it": ("il la le gli e è un una di del della in che per con non si sono anche come più ma alla dei "
           "questo questa tra quando tutto anno città tempo lavoro casa bambini storia sempre oggi molto "
           "essere stato fatto ancora"),
    "nl": ("de het een en is van in op met voor niet dat die er zijn ook als maar naar bij uit nog wel "
           "werd worden heeft hebben deze dit tussen wanneer alles jaar stad tijd werk huis kinderen "
           "geschiedenis altijd sinds vandaag veel"),
    "pt": ("o a os as e é um uma de do da em que para com não se por mais mas como foi são também seu sua "
           "entre quando tudo ano cidade tempo trabalho casa crianças história sempre desde hoje muito "
           "ainda está isso"),
    "sv": ("och att det är en ett som på av för med till den har inte om var jag de vi men från eller så "
           "kan när också efter detta mellan alla år staden tiden arbete huset barnen historia alltid "
           "sedan idag mycket"),
    "pl": ("i w na z że się nie to jest do jak o po a od ale tak już przez dla jego jej są był była "
           "może gdy tylko także między wszystko rok miasto czas praca dom dzieci historia zawsze od "
           "dzisiaj bardzo"),
}

KINDS = ("clean", "boilerplate", "keyword_spam", "repeated_lines", "gibberish", "truncated", "foreign")
#: Share of each kind among the original (non-duplicate) documents.
MIX = {"clean": 0.62, "boilerplate": 0.08, "keyword_spam": 0.05, "repeated_lines": 0.05, "gibberish": 0.05,
       "truncated": 0.05, "foreign": 0.10}
EXACT_DUP_SHARE = 0.08
NEAR_DUP_SHARE = 0.10
#: Fractions of words edited in near duplicates; the measured Jaccard is recorded.
NEAR_DUP_EDIT_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
#: In a large (block-generated) corpus, the share of duplicates whose original is in the previous block.
CROSS_BLOCK_SHARE = 0.5


def make_boilerplate(r: random.Random) -> str:
    lines = [" | ".join(r.sample(NAV, r.randint(4, 9)))]
    for _ in range(r.randint(6, 18)):
        lines.append(r.choice(BANNERS) if r.random() < 0.7 else r.choice(NAV))
    lines.append(f"Copyright {r.randint(1998, 2025)} Example Media Group. All rights reserved.")
    return "\n".join(lines)


def make_spam(r: random.Random) -> str:
    kws = r.sample(SPAM_WORDS, 4)
    n = r.randint(60, 200)
    return " ".join(r.choice(kws) if r.random() < 0.8 else r.choice(SPAM_WORDS) for _ in range(n))


def make_repeated(r: random.Random, g: EnglishGrammar) -> str:
    base = [g.sentence() for _ in range(r.randint(1, 3))]
    return "\n".join(r.choice(base) for _ in range(r.randint(15, 40)))


def make_gibberish(r: random.Random) -> str:
    words = []
    for _ in range(r.randint(50, 250)):
        if r.random() < 0.15:
            words.append("".join(r.choice("#$%&*@^~<>{}|=+") for _ in range(r.randint(1, 4))))
        else:
            words.append("".join(r.choice(SYLLABLES) for _ in range(r.randint(1, 5))))
    return " ".join(words)


def make_truncated(r: random.Random, g: EnglishGrammar) -> str:
    words = g.sentence().split()
    return " ".join(words[: r.randint(2, min(8, len(words)))])


def make_foreign(r: random.Random, lang: str) -> str:
    vocab = FOREIGN[lang].split()
    paras = []
    for _ in range(r.randint(2, 5)):
        sents = []
        for _ in range(r.randint(3, 6)):
            s = " ".join(r.choice(vocab) for _ in range(r.randint(7, 16)))
            sents.append(s[0].upper() + s[1:] + ".")
        paras.append(" ".join(sents))
    return "\n\n".join(paras)


WORD_RE = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 5) -> set:
    words = WORD_RE.findall(text.lower())
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def near_duplicate(r: random.Random, text: str, frac: float, g: EnglishGrammar) -> str:
    """Replace a fraction of the words with other vocabulary words, keeping layout."""
    tokens = re.split(r"(\w+)", text)
    word_idx = [i for i in range(1, len(tokens), 2)]
    k = max(1, round(frac * len(word_idx)))
    for i in r.sample(word_idx, min(k, len(word_idx))):
        tokens[i] = r.choice(g.nouns + g.adjs + VERBS_T)
    return "".join(tokens)


def _source(r: random.Random, clean: list[dict], earlier: list[dict] | None) -> dict:
    """The original a duplicate copies: this block's, or (half the time, when given) the previous block's."""
    if earlier and r.random() < CROSS_BLOCK_SHARE:
        return r.choice(earlier)
    return r.choice(clean)


def generate(n_docs: int = 3000, seed: int | str = 0, id_prefix: str = "",
             earlier: list[dict] | None = None) -> list[dict]:
    """Return ``n_docs`` documents (dicts with id, url, text, truth) in a shuffled, seeded order.

    ``id_prefix`` makes ids (and the mirror/copy URLs) unique across blocks of a
    large corpus; with ``earlier`` (clean documents of the previous block) about
    half of the duplicates copy one of those, so copies cross block, shard and
    file boundaries as they do in a crawl. Without both, the output is the
    demo corpus's, byte for byte.
    """
    r = random.Random(seed)
    n_exact = round(n_docs * EXACT_DUP_SHARE)
    n_near = round(n_docs * NEAR_DUP_SHARE)
    n_orig = n_docs - n_exact - n_near
    kinds = []
    for kind, share in MIX.items():
        kinds += [kind] * round(share * n_orig)
    kinds = (kinds + ["clean"] * n_orig)[:n_orig]
    r.shuffle(kinds)
    topics = list(TOPICS)
    docs = []
    for i, kind in enumerate(kinds):
        topic = r.choice(topics)
        g = EnglishGrammar(r, topic)
        lang = "en"
        if kind == "clean":
            text = g.document(r.randint(2, 6))
        elif kind == "boilerplate":
            text = make_boilerplate(r)
        elif kind == "keyword_spam":
            text = make_spam(r)
        elif kind == "repeated_lines":
            text = make_repeated(r, g)
        elif kind == "gibberish":
            text = make_gibberish(r)
            lang = "none"
        elif kind == "truncated":
            text = make_truncated(r, g)
        else:
            lang = r.choice(sorted(FOREIGN))
            text = make_foreign(r, lang)
        docs.append({"id": f"{id_prefix}doc-{i:06d}", "url": f"https://{topic}-{r.randint(1, 400)}.example/{i}",
                     "text": text, "truth": {"kind": kind, "lang": lang, "topic": topic}})
    clean = [d for d in docs if d["truth"]["kind"] == "clean"]
    extra = []
    for j in range(n_exact):
        src = _source(r, clean, earlier)
        extra.append({"id": f"{id_prefix}dup-{j:06d}",
                      "url": src["url"] if r.random() < 0.5 else f"https://mirror-{id_prefix}{j}.example/",
                      "text": src["text"],
                      "truth": {**src["truth"], "dup_of": src["id"], "dup_kind": "exact", "jaccard": 1.0}})
    for j in range(n_near):
        src = _source(r, clean, earlier)
        frac = NEAR_DUP_EDIT_FRACTIONS[j % len(NEAR_DUP_EDIT_FRACTIONS)]
        g = EnglishGrammar(r, src["truth"]["topic"])
        text = near_duplicate(r, src["text"], frac, g)
        extra.append({"id": f"{id_prefix}near-{j:06d}", "url": f"https://copy-{id_prefix}{j}.example/", "text": text,
                      "truth": {**src["truth"], "dup_of": src["id"], "dup_kind": "near",
                                "edit_fraction": frac, "jaccard": round(jaccard(src["text"], text), 4)}})
    out = docs + extra
    r.shuffle(out)
    return out


#: Above this many documents, :func:`write_corpus` streams the corpus block by block.
STREAM_ABOVE = 20_000
BLOCK_DOCS = 5_000
DOCS_PER_FILE = 50_000


def _json_line(d: dict) -> bytes:
    return (json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def write_corpus(out_dir: Path, n_docs: int = 3000, seed: int = 0, files: int = 4) -> dict:
    """Write the corpus as ``files`` gzipped JSONL files; byte-identical for the same seed.

    Corpora larger than ``STREAM_ABOVE`` documents are written by
    :func:`write_large_corpus` (streamed, never all in memory; ``files`` ignored).
    """
    if n_docs > STREAM_ABOVE:
        return write_large_corpus(out_dir, n_docs, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = generate(n_docs, seed)
    per = -(-len(docs) // files)
    for k in range(files):
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
            for d in docs[k * per:(k + 1) * per]:
                gz.write(_json_line(d))
        tmp = out_dir / f".web-{k:02d}.jsonl.gz.tmp"
        tmp.write_bytes(buf.getvalue())
        tmp.replace(out_dir / f"web-{k:02d}.jsonl.gz")
    return {"documents": len(docs), "files": files}


def _block_sizes(n_docs: int, block_docs: int) -> list[int]:
    return [min(block_docs, n_docs - start) for start in range(0, n_docs, block_docs)]


def _block(seed: int, b: int, size: int, earlier: list[dict] | None) -> list[dict]:
    """Block ``b`` of a large corpus: its own seed (a string, so blocks never share a stream) and id prefix."""
    return generate(size, seed=f"{seed}:block:{b}", id_prefix=f"b{b:05d}-", earlier=earlier)


def _clean(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["truth"]["kind"] == "clean" and "dup_of" not in d["truth"]]


def _write_file(out_path: str, seed: int, sizes: list[int], blocks: list[int]) -> int:
    """Generate ``blocks`` (consecutive block numbers) into one gzipped JSONL file; return the documents written.

    Holds two blocks at a time: the previous block's clean documents are the
    originals of this block's cross-block duplicates (for the file's first
    block, the previous block is generated again rather than passed along, so
    files can be written in parallel).
    """
    out_path = Path(out_path)
    earlier = None
    if blocks[0] > 0:
        prev = blocks[0] - 1
        earlier = _clean(_block(seed, prev, sizes[prev], None))  # originals do not depend on `earlier`
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    n = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        for b in blocks:
            docs = _block(seed, b, sizes[b], earlier)
            for d in docs:
                gz.write(_json_line(d))
            n += len(docs)
            earlier = _clean(docs)
    tmp.replace(out_path)
    return n


def write_large_corpus(out_dir: Path, n_docs: int, seed: int = 0, block_docs: int = BLOCK_DOCS,
                       docs_per_file: int = DOCS_PER_FILE, workers: int = 1) -> dict:
    """Write ``n_docs`` documents as independent seeded blocks of ``block_docs``, streamed to gzipped JSONL files.

    Each block has the demo's mix of kinds and duplicates (half of the
    duplicates copy the previous block), so the share of each kind and of
    duplicates does not change with size. Files hold whole blocks (at least
    two files, so ingest has parallel work); ``workers`` processes write files
    in parallel. The same arguments give the same bytes, whatever ``workers``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = _block_sizes(n_docs, block_docs)
    n_files = max(2, -(-n_docs // docs_per_file)) if len(sizes) > 1 else 1
    per = -(-len(sizes) // n_files)
    groups = [list(range(k, min(k + per, len(sizes)))) for k in range(0, len(sizes), per)]
    jobs = [(str(out_dir / f"web-{k:02d}.jsonl.gz"), seed, sizes, g) for k, g in enumerate(groups)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            written = list(pool.map(_write_file, *zip(*jobs)))
    else:
        written = [_write_file(*j) for j in jobs]
    return {"documents": sum(written), "files": len(jobs)}
