"""Language codes: offline detection (py3langid, model inside the wheel) and NLLB codes.

>>> detect("Der schnelle braune Fuchs springt über den faulen Hund.")
'de'
>>> nllb_code("de")
'deu_Latn'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# How much of a document detection reads: enough to be sure, cheap on long documents.
DETECT_CHARS = 2000

# ISO 639-1 -> FLORES-200 codes used by NLLB-200 (the common ones; a caller may also
# pass a FLORES code such as "zho_Hant" directly).
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn",
    "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "eo": "epo_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mr": "mar_Deva", "ms": "zsm_Latn",
    "mt": "mlt_Latn", "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn",
    "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sk": "slk_Latn", "sl": "slv_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn",
    "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn",
    "zh": "zho_Hans",
}  # fmt: skip


@lru_cache(maxsize=1)
def _classify() -> Any:
    from py3langid.langid import classify

    return classify


def detect(text: str) -> str:
    """ISO 639-1 code of ``text``'s language (the model ships in the py3langid wheel)."""
    lang, _score = _classify()(text[:DETECT_CHARS])
    return str(lang)


def nllb_code(lang: str) -> str:
    """FLORES-200 code for NLLB: a 2-letter code mapped, a FLORES code kept as is."""
    return NLLB_CODES.get(lang, lang)
