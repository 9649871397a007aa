"""Language codes a translate task accepts: ISO 639-1 (``de``), optionally with a script or
region subtag (``pt-BR``, ``zh-Hans``), or a three-letter ISO 639-2/3 code (``deu``)."""

from __future__ import annotations

import re

ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv
    cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr
    ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw
    ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv
    ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr
    ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi
    yo za zh zu""".split()  # noqa: SIM905
)
_CODE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}|[A-Za-z]{2}|[0-9]{3}))?$")
ACCEPTED = (
    "an ISO 639-1 code such as 'de' or 'fr', optionally with a region or script "
    "('pt-BR', 'zh-Hans'), or an ISO 639-3 code such as 'deu'"
)


def check_language(code: str) -> str | None:
    """None if ``code`` is a plausible language code, else why not."""
    match = _CODE.match(code)
    if not match:
        return f"{code!r} is not a language code; use {ACCEPTED}"
    base = match.group(1).lower()
    if len(base) == 2 and base not in ISO_639_1:
        return f"unknown language {code!r}; use {ACCEPTED}"
    return None
