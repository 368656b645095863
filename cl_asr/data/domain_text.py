"""Entity-heavy English text domains for the text-only adaptation scenario.

Three domains of assistant requests: "music" (artists, song titles, albums, playlists), "travel" (cities,
countries, airlines, hotels, dates, times) and "food" (restaurants, dishes, street addresses, dates, times).
Sentences come from templates written for this project, filled with entities from the `faker` package (person
names, fictional towns, countries, street names, months) and from small hand-written lists where Faker has
nothing (song titles, album words, playlists, dishes, band words). Every entity is speakable by espeak-ng's
English voice: ASCII letters and single spaces only; numbers are written as words ("March third",
"half past seven", "forty two Harris Lane").

Each domain's templates are split once: every fourth template (positions 3, 7, 11, ...) is held out for the
test split, so test sentences have sentence frames never seen in training, and the test texts are disjoint
from the train texts. Generation uses only constant seeds, so the output is the same in every call and every
process (for a given Faker version: Faker's data files define the entity pools). A split is a fixed pool of
`POOL_SIZES[split]` sentences that cycles through the split's templates; `domain_sentences(d, n, s)` returns its
first n, so a smaller request is a prefix of a larger one.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

DOMAINS: tuple[str, ...] = ("music", "travel", "food")
SPLITS: tuple[str, ...] = ("train", "test")
POOL_SIZES = {"train": 900, "test": 300}
MAX_WORDS = 20

_SEED = 20261124  # constant: the texts must not depend on a run's seed
_TEST_EVERY = 4  # every fourth template is a test template (25 % held out)


@dataclass(frozen=True)
class DomainSentence:
    text: str
    entities: tuple[str, ...]  # exact entity strings as they appear in `text`, in order of appearance


# ---------------------------------------------------------------------------------------------------------------
# Templates. A slot is {kind} or {kind:tag}; slots of one kind with different tags get different entities.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "music": (
        "Play {song} by {artist}.",
        "Can you put on the album {album} by {artist}?",
        "Add {song} to my {playlist} playlist.",
        "Play {album}, the new album from {artist}.",
        "Shuffle my {playlist} playlist, please.",
        "I want to hear something by {artist}.",
        "Skip this one and play {song} instead.",
        "Who sings {song}?",
        "Start a radio station based on {artist}.",
        "Remove {song} from the {playlist} playlist.",
        "Is {artist} playing a concert in {city} this summer?",
        "Play {song:a} and then {song:b}.",
        "Turn it up, I love {song}.",
        "Make a playlist called {playlist} with songs by {artist}.",
        "Find the live version of {song} by {artist}.",
        "Play some music by {artist:a} or {artist:b}.",
        "How long is the album {album}?",
        "Put {album} on repeat for the rest of the evening.",
        "Tell me when {artist} releases a new song.",
        "What year did {artist} record {song}?",
    ),
    "travel": (
        "Book a flight to {city} on {date}.",
        "Find me a hotel in {city} near the train station.",
        "Is my {airline} flight to {country} still leaving at {time}?",
        "I need a room at the {hotel} from {date:a} until {date:b}.",
        "What is the weather like in {city} this weekend?",
        "Remind me to check in with {airline} at {time}.",
        "How far is {city} from the {hotel}?",
        "Cancel my reservation at the {hotel} for {date}.",
        "Show me trains from {city:a} to {city:b} after {time}.",
        "Do I need a visa to visit {country}?",
        "Wake me up at {time} tomorrow, my flight to {city} leaves early.",
        "Call the {hotel} and ask about late checkout.",
        "Which airlines fly from {city} to {country}?",
        "Set an alarm for {time} on {date}.",
        "Add a trip to {country} to my calendar for {date}.",
        "How much is a taxi from the airport to the {hotel}?",
        "My {airline} flight was delayed until {time}.",
        "Find a cheap flight to {city} with {airline}.",
        "What time is it in {country} right now?",
        "Send {person} my travel plans for {date}.",
    ),
    "food": (
        "Order the {dish} from {restaurant}.",
        "Can I get the {dish:a} and a side of {dish:b} delivered to {address}?",
        "Book a table for four at {restaurant} at {time}.",
        "Is {restaurant} at {address} open right now?",
        "I would like two orders of {dish}, please.",
        "Does {restaurant} deliver to {address}?",
        "Reorder my last meal from {restaurant}.",
        "How long will the {dish} from {restaurant} take?",
        "Find a place near {address} that serves {dish}.",
        "Add {dish:a} to my order and remove the {dish:b}.",
        "What are the opening hours of {restaurant}?",
        "Send the order to {address} instead of my office.",
        "I am allergic to nuts, does the {dish} contain any?",
        "Reserve a table at {restaurant} for {date} at {time}.",
        "Leave the {dish} at the front door of {address}.",
        "What does {restaurant} recommend besides the {dish}?",
        "Cancel my order from {restaurant}, it is taking too long.",
        "Get me the cheapest {dish} within two miles of {address}.",
        "Tell {person} that dinner from {restaurant} arrives at {time}.",
        "Is the {dish} at {restaurant} very spicy?",
    ),
}

# ---------------------------------------------------------------------------------------------------------------
# Hand-written lists where Faker has nothing (all original to this project).
_SONGS = (
    "Paper Lanterns", "Midnight Harbor", "Golden Hour Again", "Slow Rain on Tuesday", "Neon Orchard",
    "The River Knows", "Lighthouse Keeper", "Dancing in the Static", "Summer Never Ends", "Blue Velvet Morning",
    "Cold Coffee", "Wildflower Road", "Echoes of Home", "Satellite Heart", "Borrowed Time",
    "Northern Lights Tonight", "Silver Lining Blues", "Runaway Train of Thought", "Dust and Diamonds",
    "Quiet Little Town", "Electric Garden", "After the Storm", "Lost in Brooklyn", "Honey and Smoke",
    "Glass Houses", "Tangerine Sky", "One More Sunrise", "Ghost of the Radio", "Starlight Motel",
    "Velvet Thunder", "Sweet Surrender", "Painted Windows", "Crimson Tide Rising", "Fireflies in June",
)
_ALBUM_FIRST = (
    "Neon", "Paper", "Silver", "Hollow", "Wild", "Electric", "Velvet", "Golden", "Distant", "Broken",
    "Midnight", "Crystal", "Faded", "Restless",
)
_ALBUM_SECOND = (
    "Summer", "Skies", "Machines", "Horizons", "Letters", "Gardens", "Seasons", "Rivers", "Echoes", "Cities",
    "Dreams", "Frontiers", "Signals",
)
_BAND_FIRST = (
    "Velvet", "Silver", "Midnight", "Paper", "Electric", "Wandering", "Golden", "Quiet", "Crimson", "Lonely",
    "Northern", "Copper",
)
_BAND_SECOND = (
    "Foxes", "Lanterns", "Rivers", "Sparrows", "Engines", "Harbors", "Wolves", "Satellites", "Pilots",
    "Ravens", "Tigers", "Mountains",
)
_PLAYLISTS = (
    "Sunday Morning Coffee", "Road Trip Classics", "Workout Energy", "Rainy Day Jazz", "Late Night Drive",
    "Focus Flow", "Summer Barbecue", "Chill Evening", "Throwback Party", "Deep Sleep", "Kitchen Dance",
    "Morning Run", "Study Session", "Sad Songs", "Beach House", "Indie Discoveries", "Dinner Party",
    "Acoustic Afternoon", "Golden Oldies", "Weekend Vibes",
)
_DISHES = (
    "pad thai", "chicken tikka masala", "margherita pizza", "mushroom risotto", "fish tacos", "beef burrito",
    "caesar salad", "spicy tuna roll", "pulled pork sandwich", "vegetable lasagna", "lamb gyro", "miso ramen",
    "butter chicken", "shrimp scampi", "falafel wrap", "clam chowder", "eggplant parmesan", "bibimbap",
    "potato gnocchi", "shakshuka", "chicken quesadilla", "beef stroganoff", "green curry", "lobster roll",
    "french onion soup", "pepperoni calzone", "chana masala", "teriyaki salmon", "mac and cheese",
    "garlic naan", "spring rolls", "baklava", "tiramisu", "pork dumplings", "chicken satay",
)
_RESTAURANT_KINDS = (
    "Kitchen", "Bistro", "Diner", "Grill", "Noodle House", "Trattoria", "Taqueria", "Cafe", "Tavern",
    "Steakhouse", "Bakery", "Curry House",
)
_RESTAURANT_HAND = (
    "The Golden Spoon", "Blue Lotus", "The Hungry Fox", "Olive Garden Terrace", "Little Saigon Corner",
    "The Salted Pretzel", "Red Lantern", "Harvest Table",
)
_AIRLINE_KINDS = ("Air", "Airways", "Airlines", "Express")
_HOTEL_KINDS = ("Hotel", "Grand Hotel", "Inn", "Lodge", "Suites", "Plaza Hotel", "Resort")
_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
    "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
    "twentieth", "twenty first", "twenty second", "twenty third", "twenty fourth", "twenty fifth",
    "twenty sixth", "twenty seventh", "twenty eighth",
)
_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_HOURS = _ONES[1:13]

_ENTITY_RE = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_SLOT_RE = re.compile(r"\{([a-z]+)(?::([a-z]+))?\}")


def _number_words(n: int) -> str:
    if not 0 < n < 1000:
        raise ValueError(n)
    hundreds, rest = divmod(n, 100)
    parts = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        parts.append(_TENS[rest // 10] + (f" {_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest:
        parts.append(_ONES[rest])
    return " ".join(parts)


class _EntityMaker:
    """Entities for one (domain, split): a Faker instance and a random.Random, both with constant seeds."""

    def __init__(self, key: str) -> None:
        from faker import Faker

        self.rng = random.Random(f"{_SEED}-{key}")
        self.fake = Faker("en_US")
        self.fake.seed_instance(zlib.crc32(f"{_SEED}-{key}".encode()))

    def _faker(self, method: str, max_words: int = 3) -> str:
        for _ in range(100):
            value = " ".join(str(getattr(self.fake, method)()).split())
            if _ENTITY_RE.fullmatch(value) and len(value.split()) <= max_words:
                return value
        raise RuntimeError(f"faker.{method} gave no speakable value in 100 tries")

    def make(self, kind: str) -> str:
        r = self.rng
        if kind == "song":
            return r.choice(_SONGS)
        if kind == "artist":
            if r.random() < 0.6:
                return f"{self._faker('first_name', 1)} {self._faker('last_name', 1)}"
            return f"The {r.choice(_BAND_FIRST)} {r.choice(_BAND_SECOND)}"
        if kind == "album":
            return f"{r.choice(_ALBUM_FIRST)} {r.choice(_ALBUM_SECOND)}"
        if kind == "playlist":
            return r.choice(_PLAYLISTS)
        if kind == "city":
            return self._faker("city")
        if kind == "country":
            return self._faker("country")
        if kind == "airline":
            return f"{self._faker('last_name', 1)} {r.choice(_AIRLINE_KINDS)}"
        if kind == "hotel":
            return f"{self._faker('last_name', 1)} {r.choice(_HOTEL_KINDS)}"
        if kind == "date":
            return f"{self._faker('month_name', 1)} {r.choice(_ORDINALS)}"
        if kind == "time":
            hour = r.choice(_HOURS)
            pattern = r.randrange(6)
            if pattern == 0:
                return f"half past {hour}"
            if pattern == 1:
                return f"quarter past {hour}"
            if pattern == 2:
                return f"quarter to {hour}"
            if pattern == 3:
                return f"{hour} thirty"
            if pattern == 4:
                return f"{hour} forty five"
            return f"{r.choice(_HOURS[5:10])} in the evening"
        if kind == "restaurant":
            if r.random() < 0.8:
                return f"{self._faker('last_name', 1)} {r.choice(_RESTAURANT_KINDS)}"
            return r.choice(_RESTAURANT_HAND)
        if kind == "dish":
            return r.choice(_DISHES)
        if kind == "address":
            return f"{_number_words(r.randint(2, 99))} {self._faker('street_name')}"
        if kind == "person":
            return self._faker("first_name", 1)
        raise KeyError(kind)


def _check_domain(domain: str) -> None:
    if domain not in _TEMPLATES:
        raise ValueError(f"unknown text domain {domain!r}; valid domains: {', '.join(DOMAINS)}")


def split_templates(domain: str, split: str) -> tuple[str, ...]:
    """The templates of one split: every fourth template of the domain is a test template."""
    _check_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    templates = _TEMPLATES[domain]
    is_test = [i % _TEST_EVERY == _TEST_EVERY - 1 for i in range(len(templates))]
    return tuple(t for t, test in zip(templates, is_test) if test == (split == "test"))


def _fill(template: str, maker: _EntityMaker) -> DomainSentence | None:
    chosen: dict[tuple[str, str], str] = {}
    for m in _SLOT_RE.finditer(template):
        key = (m.group(1), m.group(2) or "")
        if key in chosen:
            continue
        used = {v for (kind, _), v in chosen.items() if kind == key[0]}
        for _ in range(50):
            value = maker.make(key[0])
            if value not in used:
                break
        else:
            return None
        chosen[key] = value
    entities: list[str] = []

    def put(m: re.Match) -> str:
        value = chosen[(m.group(1), m.group(2) or "")]
        entities.append(value)
        return value

    text = _SLOT_RE.sub(put, template)
    text = text[0].upper() + text[1:]
    if len(text.split()) > MAX_WORDS:
        return None
    return DomainSentence(text, tuple(entities))


@lru_cache(maxsize=None)
def _pool(domain: str, split: str) -> tuple[DomainSentence, ...]:
    templates = split_templates(domain, split)
    exclude = {s.text for s in _pool(domain, "train")} if split == "test" else set()
    maker = _EntityMaker(f"{domain}-{split}")
    size = POOL_SIZES[split]
    pool: list[DomainSentence] = []
    seen: set[str] = set()
    attempts = 0
    while len(pool) < size and attempts < 50 * size:
        template = templates[attempts % len(templates)]
        attempts += 1
        sentence = _fill(template, maker)
        if sentence is None or sentence.text in seen or sentence.text in exclude:
            continue
        seen.add(sentence.text)
        pool.append(sentence)
    return tuple(pool)


def domain_pool(domain: str, split: str) -> list[DomainSentence]:
    """The whole fixed `split` pool of `domain` (domain_sentences' n-th prefix is its first n)."""
    _check_domain(domain)
    split_templates(domain, split)  # validates split
    return list(_pool(domain, split))


def domain_sentences(domain: str, n: int, split: str) -> list[DomainSentence]:
    """The first `n` sentences of `domain`'s fixed `split` ("train" or "test") pool; the same in every call."""
    _check_domain(domain)
    split_templates(domain, split)  # validates split
    pool = _pool(domain, split)
    if not 0 <= n <= len(pool):
        raise ValueError(
            f"asked for {n} {domain} {split} sentences; {len(pool)} are available (0 to {len(pool)})"
        )
    return list(pool[:n])
