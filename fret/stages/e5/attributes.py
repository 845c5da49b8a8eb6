"""E5-mistral's sampled prompt attributes and its 93 languages (arXiv 2401.00368).

The paper draws each example's language from the languages of XLM-R "with more weight on
high-resource ones", 93 in all. XLM-R's list has 100 entries; 6 of them are romanized or
Zawgyi duplicates of another entry (Bengali/Hindi/Tamil/Telugu/Urdu romanized, Burmese Zawgyi)
and Chinese comes twice (Simplified, Traditional): dropping those 7 leaves the 93 below.
"""
from __future__ import annotations

import random

# BCP-47 code -> English name (the name goes into the prompt, the code into the records).
LANGUAGES: dict[str, str] = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "br": "Breton", "bs": "Bosnian",
    "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian", "eu": "Basque",
    "fa": "Persian", "fi": "Finnish", "fil": "Filipino", "fr": "French", "fy": "Western Frisian",
    "ga": "Irish", "gd": "Scottish Gaelic", "gl": "Galician", "gu": "Gujarati", "ha": "Hausa",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jv": "Javanese",
    "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean",
    "ku": "Kurdish (Kurmanji)", "ky": "Kyrgyz", "la": "Latin", "lo": "Lao", "lt": "Lithuanian",
    "lv": "Latvian", "mg": "Malagasy", "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian",
    "mr": "Marathi", "ms": "Malay", "my": "Burmese", "ne": "Nepali", "nl": "Dutch",
    "no": "Norwegian", "om": "Oromo", "or": "Oriya", "pa": "Punjabi", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit",
    "sd": "Sindhi", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "so": "Somali",
    "sq": "Albanian", "sr": "Serbian", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "te": "Telugu", "th": "Thai", "tr": "Turkish", "ug": "Uyghur",
    "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "xh": "Xhosa",
    "yi": "Yiddish", "zh": "Chinese",
}

# High-resource languages (the largest CC-100 shares) get more weight; English dominates.
HIGH_RESOURCE = ("ru", "id", "vi", "fa", "uk", "sv", "th", "ja", "de", "ro", "hu", "bg", "fr",
                 "fi", "ko", "es", "pt", "el", "zh", "da", "pl", "he", "it", "nl", "ar", "tr",
                 "hi", "cs")
ENGLISH_WEIGHT = 50.0  # with the weights below: English ~ 53% of examples
HIGH_WEIGHT = 1.0
LOW_WEIGHT = 0.25


def default_language_weights() -> dict[str, float]:
    return {code: ENGLISH_WEIGHT if code == "en" else HIGH_WEIGHT if code in HIGH_RESOURCE
            else LOW_WEIGHT for code in LANGUAGES}


QUERY_TYPES = ["extremely long-tail", "long-tail", "common"]
QUERY_LENGTHS = ["less than 5 words", "5 to 15 words", "at least 10 words"]
CLARITY = ["clear", "understandable with some effort", "ambiguous"]
NUM_WORDS = [50, 100, 200, 300, 400, 500]
DIFFICULTY = ["high school", "college", "PhD"]
UNITS = ["sentence", "phrase", "passage"]  # STS and bitext: what S1..S3 are
HIGH_SCORES = [4, 4.5, 5]  # STS: similarity of S1-S2 on a 1-5 scale
LOW_SCORES = [2.5, 3, 3.5]  # STS: similarity of S1-S3


def weighted_choice(rng: random.Random, weights: dict[str, float]) -> str:
    """A key drawn with probability proportional to its weight (keys in sorted order, so the
    draw depends on the seed and the weights only, not on the dict's order)."""
    keys = sorted(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]


def sample_attributes(rng: random.Random, group: str, weights: dict[str, float],
                      num_words: list[int]) -> dict:
    """One example's attributes. Bitext also draws a target language other than the source.

    sample_attributes(rng, 'sts', {'en': 1}, [50]) -> {'query_type': ..., 'language': 'en', ...}
    """
    attrs = {
        "query_type": rng.choice(QUERY_TYPES),
        "query_length": rng.choice(QUERY_LENGTHS),
        "clarity": rng.choice(CLARITY),
        "num_words": rng.choice(num_words),
        "difficulty": rng.choice(DIFFICULTY),
        "unit": rng.choice(UNITS),
        "high_score": rng.choice(HIGH_SCORES),
        "low_score": rng.choice(LOW_SCORES),
        "language": weighted_choice(rng, weights),
    }
    if group == "bitext":
        others = {k: w for k, w in weights.items() if k != attrs["language"]}
        # Translating needs two languages: with one configured, pair it with English (or French).
        fallback = "fr" if attrs["language"] == "en" else "en"
        attrs["target_language"] = weighted_choice(rng, others) if others else fallback
    return attrs


def language_name(code: str) -> str:
    """language_name('de') -> 'German'; unknown codes are passed through as they are."""
    return LANGUAGES.get(code, code)
