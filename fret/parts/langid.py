"""Language check of generated text with `langid` (PyPI; its model ships inside the package).

`check(text, expected)` gives a verdict: "ok", "wrong" (with the detected code), or one of two
"unjudged" verdicts where a rejection would be a guess:
- "short": fewer than `min_words` words (langid is unreliable on a few words);
- "unknown": the expected language is one langid's 97 languages do not include;
- "unsure": langid's normalized probability for its best guess is under `min_confidence`.
Callers count the unjudged verdicts and keep those rows. Close relatives that langid confuses
(Norwegian variants; Serbian/Croatian/Bosnian; Malay/Indonesian) count as the same language.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .corpus import word_spans

SAME = [{"no", "nb", "nn"}, {"sr", "hr", "bs"}, {"ms", "id"}]
ALIASES = {"fil": "tl", "iw": "he", "ji": "yi", "in": "id"}  # our code -> langid's


def base_code(code: str) -> str:
    """base_code('zh-Hans') -> 'zh'; base_code('FIL') -> 'tl' (langid's code for Filipino)."""
    base = code.replace("_", "-").split("-")[0].lower()
    return ALIASES.get(base, base)


def same_language(a: str, b: str) -> bool:
    """same_language('nb', 'no') -> True; same_language('de', 'nl') -> False."""
    a, b = base_code(a), base_code(b)
    return a == b or any(a in s and b in s for s in SAME)


@lru_cache(maxsize=1)
def _identifier():
    from langid.langid import LanguageIdentifier, model
    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def known_languages() -> frozenset[str]:
    return frozenset(_identifier().nb_classes)


def detect(text: str) -> tuple[str, float]:
    """detect('Bonjour tout le monde, comment allez-vous ?') -> ('fr', 0.99...)"""
    code, prob = _identifier().classify(text)
    return code, float(prob)


@dataclass(frozen=True)
class Verdict:
    status: str  # ok | wrong | short | unknown | unsure
    expected: str
    detected: str = ""
    confidence: float = 0.0

    @property
    def rejects(self) -> bool:
        return self.status == "wrong"

    @property
    def reason(self) -> str:
        """'wrong_language:fr!=de' (detected != expected) for a wrong verdict."""
        return f"wrong_language:{self.detected}!={base_code(self.expected)}"


def check(text: str, expected: str, min_words: int = 4, min_confidence: float = 0.8) -> Verdict:
    if base_code(expected) not in known_languages():
        return Verdict("unknown", expected)
    if len(word_spans(text)) < min_words:
        return Verdict("short", expected)
    detected, prob = detect(text)
    if same_language(detected, expected):
        return Verdict("ok", expected, detected, prob)
    if prob < min_confidence:
        return Verdict("unsure", expected, detected, prob)
    return Verdict("wrong", expected, detected, prob)
