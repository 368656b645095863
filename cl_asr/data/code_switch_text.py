"""Code-switched sentences written for cl_asr, for the language pairs es-en, de-en and zh-en.

The matrix language comes first in a pair's name: every sentence is a Spanish, German or Mandarin sentence with
English insertions (single words or short phrases, "Mañana tengo un meeting con el team de marketing.") or an
English clause ("Ayer fui al mercado, but I forgot my wallet."). The zh-en sentences follow the style of the
ASCEND corpus: no punctuation, English words embedded in Mandarin ("我们明天的 meeting 要 cancel 吗").

Sentences come from the templates below, all original to this project. Template syntax:
    plain text      matrix-language text
    <a|b|c>         matrix-language alternatives (one is chosen)
    {a|b|c}         English alternatives (a single alternative is an English literal)
Every combination of a template's alternatives is enumerated with itertools.product; a template with more than
`_MAX_PER_TEMPLATE` combinations keeps a fixed, seeded subset of them, so that no template dominates a pair. The
final order is a shuffle with a constant seed: the output never depends on a run's seed, the process, or the
platform. Each sentence is a list of (language_code, text) segments; adjacent segments differ in language.
"""
from __future__ import annotations

import itertools
import random
import re
from functools import lru_cache

PAIRS: tuple[str, ...] = ("es-en", "de-en", "zh-en")

_SEED = 20261123  # constant: the sentence set and its order must not depend on a run's seed
_MAX_PER_TEMPLATE = 12

# ---------------------------------------------------------------------------------------------------------------
# Spanish matrix, English insertions and clauses.
_ES_TEMPLATES: tuple[str, ...] = (
    "Mañana tengo un {meeting|call|workshop|briefing} con el {team} de {marketing|sales|finance}.",
    "Ayer fui <al mercado|al banco|a la farmacia>, {but I forgot my wallet|but it was closed|and it was so crowded}.",
    "¿Me puedes mandar el {link|email|report|screenshot} antes de <la comida|las cinco|la reunión>?",
    "El {deadline} del proyecto es <el viernes|mañana|la semana que viene>, "
    "{so we need to hurry|so please be ready|so no more delays}.",
    "Estoy súper {busy|tired|stressed} <esta semana|estos días|desde el lunes>.",
    "Vamos a hacer un {brunch|picnic|barbecue} el domingo con los <primos|vecinos|compañeros>.",
    "No encuentro el {charger|laptop|password|ticket} <por ninguna parte|en mi mochila|desde ayer>.",
    "Mi jefe dijo que el {feedback|report|pitch} fue muy bueno, {which is a relief|so I am happy|believe it or not}.",
    "Esta tarde tengo que hacer el {check in|backup|upload} <otra vez|antes de cenar>.",
    "Mi hermana está obsesionada con <esa serie|ese grupo|ese programa>, "
    "{it is so weird|I do not get it|it is kind of cute}.",
    "Ese {outfit|look|style} te queda <muy bien|perfecto|genial>.",
    "{Honestly|Anyway|By the way}, <mañana no puedo ir|el concierto se canceló|ya compré las entradas>.",
    "Necesito un {break|snack|nap} <ahora mismo|urgentemente|antes de seguir>.",
    "¿Ya viste el {trailer|teaser|review} de <la nueva película|la serie>? {It looks amazing|I cannot wait}.",
    "<Mis amigos|Mis primos|Los invitados> siempre llegan tarde, {it is so annoying|every single time|no matter what}.",
    "Voy a pedir <una pizza|comida china|unos tacos> por {delivery} porque "
    "{I am starving|it is raining|I am lazy today}.",
    "El {wifi} de <la oficina|la biblioteca|este café> no funciona {at all|again|today}.",
    "Tenemos que actualizar el {software|website|calendar} <antes del lunes|esta misma tarde>.",
    "Le di {like} a tu <foto|video|comentario> de <la playa|la boda|ayer>.",
    "<Mi prima|Mi tía|Mi vecina> vive en Londres, {and she loves it|but she misses home|and works as a nurse}.",
    "<Este fin de semana|Esta noche|Mañana> me quedo en casa, {watching movies|doing nothing|with my dog}.",
    "La {presentation|interview|demo} <salió muy bien|fue un desastre|empieza a las diez>.",
    "Pásame el {password|link|address} <por mensaje|cuando puedas>, {please|thanks}.",
    "<Cuando llegué a casa|Anoche a las once|Después de la fiesta>, "
    "{everybody was already asleep|the lights were off|my phone was dead}.",
    "¿Vienes al {gym|concert|game} <conmigo|esta noche|el sábado>?",
    "<Me encanta esta canción|Este grupo me encanta|Qué buena es esta canción>, "
    "{it reminds me of summer|it is so catchy|I know every word}.",
    "Mi hijo quiere ser {youtuber|gamer|influencer} <cuando sea mayor|de todas maneras>.",
    "{Oh my god|Oh no|Seriously}, <se me olvidó el cumpleaños de mamá|perdí el autobús|me quedé dormido>.",
    "El {weekend} pasado fuimos <a la playa|a la montaña|al lago>, {and it was perfect|but it rained all day}.",
    "Tengo una {interview|call|exam} <mañana temprano|el jueves|en una hora>, {wish me luck|I am so nervous}.",
)

# ---------------------------------------------------------------------------------------------------------------
# German matrix. English nouns inserted into German are capitalised, as German writing does.
_DE_TEMPLATES: tuple[str, ...] = (
    "Morgen habe ich ein {Meeting|Briefing|Interview} mit dem {Team|Client|Boss}.",
    "Gestern war ich <im Supermarkt|bei der Bank|in der Apotheke>, "
    "{but I forgot my wallet|but it was closed|and it was so crowded}.",
    "Kannst du mir den {Link|Report|Screenshot} <bis heute Abend|vor dem Mittagessen|nach dem Termin> schicken?",
    "Die {Deadline} ist <am Freitag|schon morgen|nächste Woche>, {so we need to hurry|so please be ready|so no more delays}.",
    "Ich bin <diese Woche|gerade|seit Montag> total {busy|tired|stressed}.",
    "Am Sonntag machen wir {Brunch|Picnic|Barbecue} mit <den Nachbarn|der Familie|den Kollegen>.",
    "Ich finde meinen {Laptop|Charger|Hoodie} <nirgendwo|seit gestern nicht|schon wieder nicht>.",
    "Mein Chef sagt, das {Feedback|Update} war sehr gut, {which is a relief|so I am happy|believe it or not}.",
    "Meine Schwester ist besessen von <dieser Serie|dieser Band|dieser Sendung>, "
    "{it is so weird|I do not get it|it is kind of cute}.",
    "Das {Outfit|Shirt} steht dir <richtig gut|perfekt|super>.",
    "{Honestly|Anyway|By the way}, <morgen kann ich nicht|das Konzert fällt aus|ich habe schon Karten gekauft>.",
    "Ich brauche <jetzt sofort|dringend|erst mal> einen {Break|Snack|Coffee}.",
    "Hast du den {Trailer|Teaser} von <dem neuen Film|der neuen Staffel> gesehen? {It looks amazing|I cannot wait}.",
    "<Meine Freunde|Meine Cousins|Die Gäste> kommen immer zu spät, "
    "{it is so annoying|every single time|no matter what}.",
    "Ich bestelle heute <eine Pizza|Sushi|Nudeln>, {because I am starving|because it is raining|I am too lazy to cook}.",
    "Das {Wifi} im <Büro|Hotel|Zug> ist {so slow|down again|terrible}.",
    "Wir müssen die {Website|Software|Playlist} <bis Montag|heute noch> aktualisieren.",
    "Dein <Foto|Video> von <der Hochzeit|dem Strand> war {so cute|amazing|so funny}.",
    "<Meine Cousine|Meine Tante|Meine Nachbarin> wohnt in London, "
    "{and she loves it|but she misses home|and works as a nurse}.",
    "<Dieses Wochenende|Heute Abend|Morgen> bleibe ich zu Hause, {watching movies|doing nothing|with my dog}.",
    "Die {Presentation|Roadmap|Keynote} <lief richtig gut|war eine Katastrophe|beginnt um zehn>.",
    "Schick mir bitte das {Password|Update|Briefing} <per Nachricht|noch heute|bis morgen>.",
    "<Als ich nach Hause kam|Gestern um elf|Nach der Party>, "
    "{everybody was already asleep|the lights were off|my phone was dead}.",
    "Kommst du <heute Abend|am Samstag|auch> zum {Gym|Concert|Game}?",
    "<Ich liebe dieses Lied|Diese Band ist super|Was für ein tolles Lied>, "
    "{it reminds me of summer|it is so catchy|I know every word}.",
    "Mein Sohn will <später|unbedingt> {YouTuber|Gamer|Influencer} werden.",
    "{Oh my god|Oh no|Seriously}, <ich habe Mamas Geburtstag vergessen|der Bus ist weg|ich habe verschlafen>.",
    "Letztes {Weekend} waren wir <am Strand|in den Bergen|am See>, {and it was perfect|but it rained all day}.",
    "Ich habe <morgen früh|am Donnerstag|in einer Stunde> ein {Interview|Date|Meeting}, "
    "{wish me luck|I am so nervous}.",
    "<Der Urlaub|Das Konzert|Die Party> war ein echtes {Highlight}.",
    "Lass uns <morgen|nach der Pause|später> noch ein {Update|Meeting|Call} machen.",
)

# ---------------------------------------------------------------------------------------------------------------
# Mandarin matrix, ASCEND style: no punctuation, English words and clauses inside Mandarin.
_ZH_TEMPLATES: tuple[str, ...] = (
    "我们明天的{meeting|party|presentation|interview}要{cancel|postpone}吗",
    "这个{project|report|proposal}的{deadline}是<下周一|明天中午|这个周五>",
    "你帮我{check|confirm|update}一下<这个文件|明天的安排|那个表格>",
    "我<今天|这个星期|最近>真的好{busy|tired|stressed}",
    "<周末|明天|下班以后>要不要一起去{brunch|shopping|hiking}",
    "我的{laptop|charger|headphones}<又坏了|找不到了|忘在家里了>",
    "老板说我们的{presentation|proposal|demo}<很不错|还要改|太长了>",
    "<我昨天去看了那部电影|我们上周末去看了演唱会|我昨晚去听了音乐会>{but it was so boring|and I loved it|but I fell asleep}",
    "{Anyway|Actually|By the way}<我们下午再说吧|我已经买好票了|明天我不能来了>",
    "这个{app|website|game}<真的很好用|太慢了|我每天都用>",
    "你把那个{link|file|video}<发给我|发到群里|分享一下>吧",
    "我们<今天下午|明天上午|等一下>可以开个{video call|quick call|short meeting}吗",
    "他今天的{outfit|style|hairstyle}<好酷啊|很特别|挺好看的>",
    "<到了酒店|下了飞机>我们先去{check in}然后<再去吃饭|去海边走走|休息一下>",
    "<这首歌太好听了|我最近一直听这首歌>{it is so catchy|I love the chorus|I know every word}",
    "我<明天|下个月|周五>有个{interview|exam|presentation}好紧张",
    "你<今天|刚才>说的那个{idea|plan|suggestion}<挺好的|可以试试|我觉得不行>",
    "我们<晚上|周末>一起{play games|watch a movie|go jogging}吧",
    "{Oh my god|Oh no|Seriously}<我又迟到了|我忘了带钥匙|手机没电了>",
    "她每天都要发<好几个|一个>{selfie|story|vlog}",
    "<我妹妹|我表哥|我同事>现在住在伦敦{and loves it there|but misses home|and works at a bank}",
    "这家店的{coffee|cake|pasta}<真的不错|有点贵|一般般>",
    "我<下班以后|明天早上|每天晚上>要去{gym|yoga class|swimming}",
    "那个{customer|client|manager}又<打电话来了|改主意了|发邮件来了>",
    "你的{wifi password|email address|username}<是多少|可以告诉我吗>",
    "我<昨天|刚才|早上>不小心把那个{file|email|photo}删了",
    "<这次旅行|那个派对|今天的活动>真的很{relaxing|fun|tiring}",
    "我们要不要先{book|reserve}<酒店|机票|餐厅>",
    "<我等一下|我们晚点>再{call|text|email}你",
    "你<周末|明天晚上>有空吗{maybe we could grab dinner|we could watch a movie|how about a hike}",
)

_TEMPLATES = {"es-en": _ES_TEMPLATES, "de-en": _DE_TEMPLATES, "zh-en": _ZH_TEMPLATES}

_TOKEN = re.compile(r"<([^<>]*)>|\{([^{}]*)\}|([^<>{}]+)")
_CJK = r"\u3400-\u9fff\uf900-\ufaff"
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?¿¡，。？！、]+")
_PUNCT_ONLY = re.compile(r"^[\s,.;:!?¿¡，。？！、]*$")
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")


def _check_pair(pair: str) -> None:
    if pair not in _TEMPLATES:
        raise ValueError(f"unknown code-switching pair {pair!r}; valid pairs: {', '.join(PAIRS)}")


def _parse(template: str, matrix: str) -> list[tuple[str, tuple[str, ...]]]:
    """A template as a list of (language, alternatives) pieces."""
    pieces: list[tuple[str, tuple[str, ...]]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        if m.start() != pos:
            raise ValueError(f"malformed code-switching template {template!r} at {pos}")
        pos = m.end()
        if m.group(1) is not None:
            pieces.append((matrix, tuple(m.group(1).split("|"))))
        elif m.group(2) is not None:
            pieces.append(("en", tuple(m.group(2).split("|"))))
        else:
            pieces.append((matrix, (m.group(3),)))
    if pos != len(template):
        raise ValueError(f"malformed code-switching template {template!r}")
    return pieces


def _segments(languages: list[str], texts: list[str], matrix: str) -> list[tuple[str, str]]:
    """Merge same-language neighbours, tidy spaces, hang stray punctuation on the segment before it."""
    merged: list[list[str]] = []
    for lang, text in zip(languages, texts):
        if merged and merged[-1][0] == lang:
            merged[-1][1] += text
        else:
            merged.append([lang, text])
    out: list[list[str]] = []
    for lang, text in merged:
        text = " ".join(text.split())
        if matrix == "zh":
            text = _CJK_GAP.sub("", text)
        lead = _LEADING_PUNCT.match(text)
        if out and lead and lead.group().strip():
            out[-1][1] += lead.group().strip()
            text = text[lead.end():]
        if not text or _PUNCT_ONLY.match(text):
            if out:
                out[-1][1] += text.strip()
            continue
        if out and out[-1][0] == lang:
            out[-1][1] += " " + text
        else:
            out.append([lang, text])
    return [(lang, text) for lang, text in out]


@lru_cache(maxsize=None)
def _build(pair: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    matrix = pair.split("-")[0]
    seen: set[str] = set()
    sentences: list[tuple[tuple[str, str], ...]] = []
    for t_index, template in enumerate(_TEMPLATES[pair]):
        pieces = _parse(template, matrix)
        languages = [lang for lang, _ in pieces]
        combos = list(itertools.product(*(alts for _, alts in pieces)))
        if len(combos) > _MAX_PER_TEMPLATE:
            keep = sorted(random.Random(f"{_SEED}-{pair}-{t_index}").sample(range(len(combos)), _MAX_PER_TEMPLATE))
            combos = [combos[i] for i in keep]
        for combo in combos:
            segs = tuple(_segments(languages, list(combo), matrix))
            text = sentence_text(segs)
            if text in seen:
                continue
            seen.add(text)
            sentences.append(segs)
    random.Random(f"{_SEED}-{pair}-order").shuffle(sentences)
    return tuple(sentences)


def code_switched_sentences(pair: str) -> list[list[tuple[str, str]]]:
    """All distinct sentences of `pair` ("es-en", "de-en", "zh-en") in a fixed order.

    Each sentence is a list of (language_code, text_segment) in speaking order, e.g.
    [("es", "Mañana tengo un"), ("en", "meeting"), ("es", "con el"), ("en", "team"), ("es", "de marketing.")].
    """
    _check_pair(pair)
    return [list(segs) for segs in _build(pair)]


def sentence_text(segments) -> str:
    """The reference transcript of a segmented sentence: segments joined by one space, except that two Chinese
    characters are never separated (ASCEND style: "我们明天的 meeting 要 cancel 吗")."""
    text = " ".join(" ".join(str(t).split()) for _, t in segments if str(t).strip())
    return _CJK_GAP.sub("", text)
